#!/usr/bin/env bash
# Host tuning gVisor benefits from, applied when this machine allows it and
# never fatal: `make run` works without it, only a little slower.
#
# gVisor keeps application memory in a shared-memory file and asks for huge
# pages on it (runsc's --app-huge-pages, on by default), which the kernel
# grants only when shmem huge pages are allowed on request. Fewer, larger
# mappings mean fewer faults handled by gVisor's kernel for every runtime
# that starts; python3 executions cost ~5 % less CPU on our 2-core VM.
set -u
knob=/sys/kernel/mm/transparent_hugepage/shmem_enabled
[ -w "$knob" ] || exit 0
case "$(cat "$knob")" in
*"[never]"*)
	if echo advise > "$knob" 2>/dev/null; then
		echo "host: shmem huge pages set to 'advise' for gVisor ($knob)"
	fi
	;;
esac
exit 0
