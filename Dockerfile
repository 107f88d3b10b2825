# Multi-stage: build with cgo + libopus, run on a small Debian with only the
# libopus runtime, as a non-root user. `ponte healthcheck` replaces wget/curl.
#
#   docker build --build-arg VERSION=$(git describe --always --dirty) \
#                --build-arg REVISION=$(git rev-parse HEAD) -t ponte .
FROM golang:1.26-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends libopus-dev pkg-config && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG REVISION=
# .git is not in the build context (.dockerignore): the revision comes in as
# a build argument instead of Go's VCS stamping.
RUN CGO_ENABLED=1 go build -tags nolibopusfile -trimpath -buildvcs=false \
    -ldflags "-s -w -X main.version=${VERSION} -X main.revision=${REVISION}" -o /out/ponte ./cmd/ponte

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends libopus0 ca-certificates && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home /var/lib/ponte --create-home ponte
COPY --from=build /out/ponte /usr/local/bin/ponte
USER ponte
WORKDIR /var/lib/ponte
# webhook (public), admin (metrics/health), SIP, WebRTC single-port mux, RTP
# range. Media needs host networking or these exact ports published
# (docs/operations.md).
EXPOSE 8443/tcp 9090/tcp 5060/udp 5060/tcp 3478/udp 20000-29999/udp
# SIGTERM drains (drain.timeout, default 5m): give `docker stop -t` more.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=4s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/ponte", "healthcheck", "-config", "/etc/ponte/ponte.yaml"]
ENTRYPOINT ["/usr/local/bin/ponte"]
CMD ["serve", "-config", "/etc/ponte/ponte.yaml"]
