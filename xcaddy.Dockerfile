# syntax=docker/dockerfile:1
#
# Stock Caddy with the SandboxAPI gateway modules built in, for operators who
# run Caddy themselves instead of the gateway embedded in the sandboxapi
# binary (caddy-modules/edge). The modules are:
#   http.handlers.sandboxapi_auth                  (directive sandboxapi_auth)
#   http.handlers.sandboxapi_limits                (directive sandboxapi_limits)
#   http.reverse_proxy.upstreams.sandboxapi_cell   (reverse_proxy { dynamic sandboxapi_cell ... })
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
# --with names the packages to import; --replace points their module at the
# checked-out source so the build uses this tree, not a published version.
RUN xcaddy build v${CADDY_VERSION} \
      --output /usr/bin/caddy \
      --with github.com/sandboxapi/sandboxapi/caddy-modules/auth \
      --with github.com/sandboxapi/sandboxapi/caddy-modules/cellroute \
      --with github.com/sandboxapi/sandboxapi/caddy-modules/limits \
      --replace github.com/sandboxapi/sandboxapi=/src/sandboxapi \
 && /usr/bin/caddy list-modules | grep -q '^http.handlers.sandboxapi_auth$' \
 && /usr/bin/caddy list-modules | grep -q '^http.handlers.sandboxapi_limits$' \
 && /usr/bin/caddy list-modules | grep -q '^http.reverse_proxy.upstreams.sandboxapi_cell$'

FROM caddy:${CADDY_VERSION}
COPY --from=builder /usr/bin/caddy /usr/bin/caddy
