# ponte: `make demo` runs a real call through the gateway; `make test` runs the tests.
# Both install what they need on a fresh Debian machine (scripts/deps.sh).
export PATH := /usr/local/go/bin:$(PATH)
GO      ?= go
TAGS    := nolibopusfile
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
# A count, not a duration: a duration races Go 1.26's fuzz coordinator at the
# deadline (golang/go#75804, fixed in Go 1.27) and fails with a bare
# "context deadline exceeded" and no crasher.
FUZZTIME ?= 20000x

.PHONY: all build demo test test-ops test-unit test-media fuzz-smoke vet bench vulncheck soak deps deps-test clean

all: build

deps:
	@./scripts/deps.sh

deps-test:
	@./scripts/deps.sh test

build: deps
	$(GO) build -tags $(TAGS) -ldflags "$(LDFLAGS)" -o bin/ponte ./cmd/ponte

demo: build
	./bin/ponte demo

vet:
	$(GO) vet -tags $(TAGS) ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }

test: deps-test vet test-ops test-unit test-media fuzz-smoke

# The alert rules parse and every alert fires on its fixture (promtool, from
# Debian's prometheus package); the Prometheus config loads.
test-ops:
	promtool check rules deploy/prometheus/alerts.yml
	promtool test rules deploy/prometheus/alerts_test.yml
	promtool check config deploy/prometheus/prometheus.yml

# Every package under the race detector, except the end-to-end package whose
# real-time audio cannot keep pace with -race on a 2-core machine.
# One package at a time (-p 1): several packages hold real-time checks
# (tones per 20 ms window, packets per second) that starve when the race
# detector runs them side by side on a 2-core machine.
test-unit:
	$(GO) test -tags $(TAGS) -race -count=1 -p 1 -timeout 30m $$($(GO) list ./... | grep -v '/test$$')

# Real-time media quality (tone windows, delay, DTMF timing, packet rates):
# the bridge and the end-to-end/interop tests, without -race and one package
# at a time so the timing they assert is the gateway's, not the test runner's.
test-media:
	$(GO) test -tags $(TAGS) -count=1 -p 1 -timeout 30m ./gateway/ ./test/ ./internal/rtpeng/
	$(GO) test -tags $(TAGS) -count=1 -run 'Alloc' ./sip/ ./transcode/ ./webrtc/

# Every fuzz target runs briefly (FUZZTIME executions each) so CI catches
# crashers in the parsers of outside input; run longer with FUZZTIME=5000000x.
fuzz-smoke:
	@set -e; for pkg in $$($(GO) list -tags $(TAGS) ./...); do \
	  dir=$$($(GO) list -tags $(TAGS) -f '{{.Dir}}' $$pkg); \
	  for f in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$dir/*_test.go 2>/dev/null | sed 's/func //'); do \
	    echo "fuzz $$pkg $$f ($(FUZZTIME))"; \
	    $(GO) test -tags $(TAGS) -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg >/tmp/ponte-fuzz.log 2>&1 || { cat /tmp/ponte-fuzz.log; exit 1; }; \
	  done; \
	done

# Micro-benchmarks of the media path (docs/performance.md): codecs, bridge
# frames each way, SRTP, RFC 4733, jitter buffer, pion's own per-packet cost,
# and the bare relay used as the "bare parts" reference.
bench: deps
	$(GO) test -tags $(TAGS) -run '^$$' -bench . -benchmem ./transcode/ ./gateway/ ./sip/ ./webrtc/ ./internal/bare/

# 30 minutes of continuous calls through a running gateway (docs/soak.md):
# RSS, goroutines and open fds sampled, with a pause to no calls every 5 min,
# and judged flat. Not part of `make test` or CI. Report in bin/soak.txt and
# bin/soak.json, heap profiles at each pause in bin/soak-heap; the exit
# status is ponte's (non-zero: not flat, or a call failed).
soak: build
	@{ nice -n 5 ./bin/ponte load -soak -soak-json bin/soak.json -heap-profiles bin/soak-heap; echo $$? > bin/soak.rc; } | tee bin/soak.txt; exit $$(cat bin/soak.rc)

# Known vulnerabilities in the code paths ponte calls (govulncheck, pinned).
# It needs the Go vulnerability database (vuln.go.dev, or a mirror named by
# GOVULNDB=file:///path or https://...). This build machine's network does
# not reach it, so CI cannot run it; run it where the database is reachable.
GOVULNCHECK_VERSION ?= v1.1.4
GOVULNDB ?= https://vuln.go.dev
vulncheck:
	GOFLAGS=-buildvcs=false $(GO) install golang.org/x/vuln/cmd/govulncheck@$(GOVULNCHECK_VERSION)
	$$($(GO) env GOPATH)/bin/govulncheck -db $(GOVULNDB) -tags $(TAGS) ./...

clean:
	rm -rf bin
