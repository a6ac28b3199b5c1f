# syntax=docker/dockerfile:1
#
# Stock Caddy with the SandboxAPI gateway modules built in, for operators who
# run Caddy themselves instead of the gateway embedded in the sandboxapi
# binary (caddy-modules/edge). The modules are:
#   http.handlers.sandboxapi_auth                  (directive sandboxapi_auth)
#   http.handlers.sandboxapi_limits                (directive sandboxapi_limits)
#   http.handlers.sandboxapi_selfserve             (directive sandboxapi_selfserve: signup, Stripe)
#   http.handlers.sandboxapi_playground            (directive sandboxapi_playground: the page at /)
#   sandboxapi.rate_stores.memory                  (sandboxapi_limits { rate_store memory })
#   sandboxapi.rate_stores.redis                   (sandboxapi_limits { rate_store redis { ... } })
#   http.reverse_proxy.upstreams.sandboxapi_cell   (reverse_proxy { dynamic sandboxapi_cell ... })
#   sandboxapi.membership.static                   (dynamic sandboxapi_cell { membership static { ... } })
#   sandboxapi.membership.gossip                   (dynamic sandboxapi_cell { membership gossip { ... } })
#   http.handlers.sandboxapi_request               (directive sandboxapi_request: request ids, body deadline)
#   caddy.listeners.sandboxapi_conn_limit          (servers { listener_wrappers { sandboxapi_conn_limit ... } })
#   caddy.listeners.sandboxapi_json_errors         (servers { listener_wrappers { sandboxapi_json_errors } })
# Everything is configured in the Caddyfile or JSON config; none of it needs
# Go code of ours beyond the import xcaddy writes.
#
#   docker build -f xcaddy.Dockerfile -t sandboxapi-caddy .
#   docker run -p 8080:8080 \
#     -v "$PWD/ops/gateway/Caddyfile.example:/etc/caddy/Caddyfile:ro" \
#     -v /var/lib/sandboxapi:/var/lib/sandboxapi \
#     -v /etc/sandboxapi/cell.secret:/etc/sandboxapi/cell.secret:ro \
#     -e RAPIDAPI_PROXY_SECRET=... sandboxapi-caddy

# Keep in step with github.com/caddyserver/caddy/v2 in go.mod: the modules
# are compiled against that version's APIs.
ARG CADDY_VERSION=2.11.9

FROM caddy:${CADDY_VERSION}-builder AS builder
ARG CADDY_VERSION
# go.mod may ask for a newer Go than the builder image ships; let the go
# command fetch that toolchain.
ENV GOTOOLCHAIN=auto
COPY . /src/sandboxapi
# --with names the module, at the version Go gives a replaced module with
# none, and points it at the checked-out source: xcaddy imports its root
# package (sandboxapi.go), which imports every gateway module, and the
# build uses this tree, not a published version. TestXcaddyBuild runs this
# RUN line, with the paths of a test's directory.
RUN xcaddy build v${CADDY_VERSION} \
      --output /usr/bin/caddy \
      --with github.com/sandboxapi/sandboxapi@v0.0.0-00010101000000-000000000000=/src/sandboxapi \
 && for m in http.handlers.sandboxapi_auth http.handlers.sandboxapi_limits \
            http.handlers.sandboxapi_selfserve http.handlers.sandboxapi_playground \
            sandboxapi.rate_stores.memory sandboxapi.rate_stores.redis \
            http.reverse_proxy.upstreams.sandboxapi_cell sandboxapi.membership.static \
            sandboxapi.membership.gossip \
            http.handlers.sandboxapi_request caddy.listeners.sandboxapi_conn_limit \
            caddy.listeners.sandboxapi_json_errors; do \
      /usr/bin/caddy list-modules | grep -qx "$m" || { echo "module $m missing" >&2; exit 1; }; \
    done

FROM caddy:${CADDY_VERSION}
COPY --from=builder /usr/bin/caddy /usr/bin/caddy
