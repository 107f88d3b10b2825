# Multi-stage: build with cgo + libopus, run on a small Debian with only the
# libopus runtime, as a non-root user.
FROM golang:1.26-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends libopus-dev pkg-config && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=1 go build -tags nolibopusfile -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/ponte ./cmd/ponte

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends libopus0 ca-certificates wget && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home /var/lib/ponte --create-home ponte
COPY --from=build /out/ponte /usr/local/bin/ponte
USER ponte
WORKDIR /var/lib/ponte
# webhook (public), admin (metrics/health), SIP, WebRTC single-port mux, RTP range
EXPOSE 8443/tcp 9090/tcp 5060/udp 5060/tcp 3478/udp 20000-29999/udp
HEALTHCHECK --interval=10s --timeout=3s CMD wget -qO- http://127.0.0.1:9090/healthz || exit 1
ENTRYPOINT ["/usr/local/bin/ponte"]
CMD ["serve", "-config", "/etc/ponte/ponte.yaml"]
