#!/usr/bin/env bash
# Host tuning gVisor benefits from, applied when this machine allows it and
# never fatal: `make run` works without it, only a little slower.
#
# gVisor keeps application memory in a shared-memory file and asks for huge
# pages on it (runsc's --app-huge-pages, on by default), which the kernel
# grants only when shmem huge pages are allowed on request. Fewer, larger
# mappings mean fewer faults handled by gVisor's kernel for every runtime
# that starts; python3 executions cost ~5 % less CPU on our 2-core VM.
#
# On a KVM guest whose haltpoll cpuidle driver is told not to poll
# (guest_halt_poll_ns=0), every wakeup of an idle vCPU is a VM exit and
# re-entry. gVisor turns each system call of a sandboxed program into a
# handoff between threads, so on such a VM a getppid() inside the sandbox
# cost 20-100 us and a pipe round trip 110-370 us; with vCPUs polling up
# to 200 us before halting they cost 1-7 us and 7-9 us, and a session
# execute of `x = 42` went from ~3.5 ms to ~2 ms. The poll window adapts
# (it shrinks when wakeups do not come), and time spent polling is idle
# time to the kernel's accounting.
set -u
knob=/sys/kernel/mm/transparent_hugepage/shmem_enabled
if [ -w "$knob" ]; then
	case "$(cat "$knob")" in
	*"[never]"*)
		if echo advise > "$knob" 2>/dev/null; then
			echo "host: shmem huge pages set to 'advise' for gVisor ($knob)"
		fi
		;;
	esac
fi
poll=/sys/module/haltpoll/parameters/guest_halt_poll_ns
if [ -w "$poll" ] && [ "$(cat "$poll")" = 0 ]; then
	if echo 200000 > "$poll" 2>/dev/null; then
		echo "host: idle vCPUs poll up to 200 us before halting ($poll)"
	fi
fi
exit 0
