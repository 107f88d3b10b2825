#!/usr/bin/env python3
"""Prints ponte vs rtpengine from the JSON reports of compare-rtpengine.sh.

usage: ratios.py DIR MODE...   (reads DIR/ponte-MODE.json and DIR/rtpengine-MODE.json)

Calls per core = 1 / (gateway CPU-seconds per call-second): how many calls one fully used core
carries. Loss is per direction over all calls, 100 * (sent - received) / sent.
"""
import json
import sys


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        print(f"  ({path}: {e})", file=sys.stderr)
        return None


def get(rep, *paths):
    """The first of the dotted paths present in rep, else None. Several paths per figure so
    that fields `ponte load` gains later (loss, latency) are picked up without edits here."""
    if rep is None:
        return None
    for p in paths:
        v = rep
        for k in p.split("."):
            if not isinstance(v, dict) or k not in v:
                v = None
                break
            v = v[k]
        if v is not None:
            return v
    return None


def per_core(rep):
    c = get(rep, "gateway_cpu_seconds_per_call_second")
    return 1 / c if c else None


def rss_per_call(rep):
    v = get(rep, "gateway_rss_per_call_kib")
    if v is not None:
        return v
    peak, idle, n = get(rep, "gateway_rss_peak_kib"), get(rep, "gateway_rss_idle_kib"), get(rep, "concurrency")
    if peak is None or idle is None or not n:
        return None
    return (peak - idle) / n


def fmt(v, spec):
    return "n/a" if v is None else format(v, spec)


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "n/a"
    return f"{a / b:.2f}"


ROWS = [
    # label, getter, format
    ("calls ok", lambda r: get(r, "calls_ok"), "d"),
    ("calls failed", lambda r: get(r, "calls_failed"), "d"),
    ("audio ok (both ways)", lambda r: get(r, "audio_ok"), "d"),
    ("CPU-s per call-second", lambda r: get(r, "gateway_cpu_seconds_per_call_second"), ".5f"),
    ("calls per core", per_core, ".1f"),
    ("loss to caller %", lambda r: get(r, "loss_to_caller.loss_percent"), ".3f"),
    ("loss to PBX %", lambda r: get(r, "loss_to_pbx.loss_percent"), ".3f"),
    # One-way delay: only `ponte load` measures it so far (marker tones in the audio).
    ("delay to caller p99 ms", lambda r: get(r, "delay_to_caller.including_jitter_buffer_and_codecs.p99_ms"), ".1f"),
    ("delay to PBX p99 ms", lambda r: get(r, "delay_to_pbx.including_jitter_buffer_and_codecs.p99_ms"), ".1f"),
    ("RSS per call KiB", rss_per_call, ".0f"),
    ("rtpengine queue overflows", lambda r: get(r, "rtpengine_queue_overflow_logs"), "d"),
    ("host busy %", lambda r: get(r, "host_busy_percent"), ".0f"),
    ("host steal %", lambda r: get(r, "host_steal_percent"), ".1f"),
]


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    d = sys.argv[1]
    verdicts = []
    for mode in sys.argv[2:]:
        p, r = load(f"{d}/ponte-{mode}.json"), load(f"{d}/rtpengine-{mode}.json")
        n = get(p, "concurrency") or get(r, "concurrency")
        hold = get(p, "hold") or get(r, "hold")
        codec = get(p, "codec") or get(r, "codec")
        print(f"\n{mode}: {n} concurrent calls, hold {hold}, codec {codec}")
        print(f"  {'':26} {'ponte':>12} {'rtpengine':>12} {'ponte/rtpe':>11}")
        for label, g, spec in ROWS:
            a, b = g(p), g(r)
            print(f"  {label:26} {fmt(a, spec):>12} {fmt(b, spec):>12} {ratio(a, b):>11}")
        cp, cr = get(p, "gateway_cpu_seconds_per_call_second"), get(r, "gateway_cpu_seconds_per_call_second")
        if cp and cr:
            if mode == "transcoding":
                ok = cr / cp >= 3
                verdicts.append(f"transcoded calls per core: ponte {cr / cp:.2f} x rtpengine (target >= 3): {'MET' if ok else 'NOT MET'}")
            else:
                ok = cp <= cr
                verdicts.append(f"passthrough CPU per call: ponte {cp / cr:.2f} x rtpengine (target <= 1): {'MET' if ok else 'NOT MET'}")
    if verdicts:
        print()
        for v in verdicts:
            print("  " + v)
        print("  (loss < 0.1 % is part of the targets: check the loss rows; figures are only as good as the"
              " machine was idle: see host busy/steal)")


if __name__ == "__main__":
    main()
