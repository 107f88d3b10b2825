package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/ponte-gw/ponte/config"
)

// healthcheck is the container HEALTHCHECK (Dockerfile): GET /healthz (or
// /readyz with -ready) on the admin listener named in the config, exit 0 on
// 200. A subcommand rather than wget or curl, so the image carries nothing
// but ponte and the libopus runtime.
func healthcheck(args []string) error {
	fs := flag.NewFlagSet("healthcheck", flag.ContinueOnError)
	path := fs.String("config", "/etc/ponte/ponte.yaml", "config file (for http.admin)")
	url := fs.String("url", "", "check this URL instead of the config's admin listener")
	ready := fs.Bool("ready", false, "check /readyz (ready for new calls) instead of /healthz (alive)")
	timeout := fs.Duration("timeout", 3*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	target := *url
	if target == "" {
		cfg, err := config.Load(*path)
		if err != nil {
			return err
		}
		p := "/healthz"
		if *ready {
			p = "/readyz"
		}
		target = "http://" + loopbackFor(cfg.HTTP.Admin) + p
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return err
	}
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return errors.New(target + ": " + resp.Status)
	}
	fmt.Println(target + ": ok")
	return nil
}

// loopbackFor turns a wildcard listen address into one to connect to.
func loopbackFor(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}
