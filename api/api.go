// Package api is ponte's REST API on the admin listener: call history (JSON
// and CSV) behind a bearer token, and the deliverer of call events to the
// business's webhook. It reads records through package store and never
// bypasses the gateway for anything that changes a call.
package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"

	"github.com/ponte-gw/ponte/store"
)

// CallReader is the part of the store the API reads.
type CallReader interface {
	Get(ctx context.Context, idOrProtocol string) (*store.Call, error)
	List(ctx context.Context, f store.Filter) (store.Page, error)
}

// Config configures the handler.
type Config struct {
	// Token is the bearer token (config api.token). Empty refuses every
	// request: an API with call records must never be open by default.
	Token  string
	Calls  CallReader
	Logger *slog.Logger
	// Outbound serves permission requests and click-to-call (outbound.go);
	// nil: those endpoints answer 501.
	Outbound Outbound
}

// New returns the handler for /api/. Mount it on the admin listener:
//
//	adm.Handle("/api/", api.New(api.Config{Token: cfg.API.Token, Calls: st}))
func New(c Config) http.Handler {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	h := &handler{calls: c.Calls, log: c.Logger, out: c.Outbound}
	if c.Token != "" {
		sum := sha256.Sum256([]byte(c.Token))
		h.tokenSum = sum[:]
	}
	mux := http.NewServeMux()
	// Methods are checked in the handlers so every error stays JSON.
	mux.HandleFunc("/api/calls", func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			h.post(h.clickToCall)(w, r)
			return
		}
		w.Header().Set("Allow", "GET, HEAD, POST")
		h.get(h.list)(w, r)
	})
	h.outboundRoutes(mux)
	mux.HandleFunc("/api/calls.csv", h.get(h.csv))
	mux.HandleFunc("/api/calls/{id}", h.get(h.call))
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such API endpoint")
	})
	return h.auth(mux)
}

type handler struct {
	out      Outbound
	calls    CallReader
	log      *slog.Logger
	tokenSum []byte // SHA-256 of the token; nil = API disabled
}

// auth checks the bearer token (RFC 6750 §2.1) before anything else, so an
// unauthenticated client learns nothing, not even which paths exist.
// Comparing SHA-256 digests in constant time hides both the token's bytes
// and its length from timing.
func (h *handler) auth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store") // call records are personal data
		if h.tokenSum == nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="ponte"`)
			writeError(w, http.StatusUnauthorized, "the API is disabled: set api.token in the config")
			return
		}
		scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			// RFC 6750 §3.1: no credentials -> no error code in the challenge.
			w.Header().Set("WWW-Authenticate", `Bearer realm="ponte"`)
			writeError(w, http.StatusUnauthorized, "a bearer token is required")
			return
		}
		sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
		if subtle.ConstantTimeCompare(sum[:], h.tokenSum) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="ponte", error="invalid_token"`)
			writeError(w, http.StatusUnauthorized, "invalid token")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// get allows GET and HEAD only.
func (h *handler) get(fn http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			writeError(w, http.StatusMethodNotAllowed, "method not allowed")
			return
		}
		fn(w, r)
	}
}

// listResponse is the JSON of GET /api/calls.
type listResponse struct {
	Calls      []store.Call `json:"calls"`
	NextCursor string       `json:"next_cursor,omitempty"`
}

func (h *handler) list(w http.ResponseWriter, r *http.Request) {
	f, err := ParseFilter(r.URL.Query())
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if f.Limit <= 0 {
		f.Limit = store.DefaultLimit
	}
	f.Limit = min(f.Limit, store.MaxLimit)
	p, err := h.calls.List(r.Context(), f)
	if err != nil {
		h.storeError(w, r, err)
		return
	}
	if p.Calls == nil {
		p.Calls = []store.Call{}
	}
	writeJSON(w, http.StatusOK, listResponse{Calls: p.Calls, NextCursor: p.Next})
}

func (h *handler) call(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if id == "" || len(id) > 128 {
		writeError(w, http.StatusNotFound, "call not found")
		return
	}
	c, err := h.calls.Get(r.Context(), id)
	if err != nil {
		h.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, c)
}

// storeError maps store errors to status codes; internals stay in the log.
func (h *handler) storeError(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, "call not found")
	case errors.Is(err, store.ErrBadCursor):
		writeError(w, http.StatusBadRequest, "invalid cursor")
	case errors.Is(err, context.Canceled):
		// the client went away
	default:
		h.log.Error("api: store failed", "path", r.URL.Path, "err", err)
		writeError(w, http.StatusInternalServerError, "internal error")
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// writeError answers {"error": "..."}.
func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}
