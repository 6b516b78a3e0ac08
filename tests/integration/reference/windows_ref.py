"""Reference for the aggregator: the window results of SPEC §3/§5 computed
by a plain batch algorithm over the whole input, independent of the C code.

Rules mirrored from services/aggregator/README.md ("Window rules"):
- each input partition is processed in offset order with its OWN watermark
  (max event time seen on it - bound);
- an event is late (counted nowhere) when the end of its 1-minute window +
  lateness <= watermark; lateness is not judged per size, so every 5-min and
  1-h window is the sum of its 1-min windows;
- an event_id already counted on the partition is a duplicate (a copy that is
  not late always finds its first copy);
- revenue = price x quantity (1 when absent) over purchases, in micros;
- sessions go to the windows of their `end`, with the sessions partition's
  own watermark (max end - bound); a revision replaces the earlier one, a
  tombstone removes it, a revision not above the one counted is ignored; a
  revision whose earlier revision's window is late counts as a new session
  (the closed window keeps the earlier one; counted in
  stats["revisions_as_new"]); a new session whose own window is late is
  ignored.
- `late` of a window: records of a partition that went to the late topic
  (late events, and undecodable records, given as None in the input) while
  the partition's newest event was in that window (no count before the
  partition's first event).
unique_users is exact here (a set); the C side uses HyperLogLog.
"""
from collections import defaultdict

SIZES = (60000, 300000, 3600000)
DIMS = ("url", "category", "device_type", "country", "event_type")


def wstart(t, size):
    return t - (t % size)  # Python's % floors, also for negative t


class Window:
    __slots__ = ("events", "page_views", "purchases", "revenue_micros", "users", "counts",
                 "sessions", "session_ms_sum", "bounces", "conversions", "late")

    def __init__(self):
        self.events = self.page_views = self.purchases = self.revenue_micros = 0
        self.users = set()
        self.counts = {d: defaultdict(int) for d in DIMS}
        self.sessions = self.session_ms_sum = self.bounces = self.conversions = 0
        self.late = 0

    def result(self, top_n=100):
        urls = sorted(((u, c) for u, c in self.counts["url"].items() if c > 0),
                      key=lambda x: (-x[1], x[0].encode()))
        s = self.sessions
        return {
            "events": self.events, "page_views": self.page_views,
            "purchases": self.purchases, "revenue_micros": self.revenue_micros,
            "unique_users": len(self.users),
            "counts": {d: {k: v for k, v in self.counts[d].items() if v != 0} for d in DIMS},
            "top_urls": urls[:top_n],
            "sessions_closed": s,
            "avg_session_ms": self.session_ms_sum / s if s else 0.0,
            "bounce_rate": self.bounces / s if s else 0.0,
            "conversion_rate": self.conversions / s if s else 0.0,
            "late": self.late,
        }


def _late(t, wm, lateness):
    return wm is not None and wstart(t, SIZES[0]) + SIZES[0] + lateness <= wm


def compute(raw_partitions, session_partitions, bound=10000, lateness=300000):
    """raw_partitions: list (per partition) of event dicts (None: an
    undecodable record) in offset order
    (keys: event_id, timestamp (ms), user_id, event_type, page_url, geo
    {country}, device {type}, metadata {category, quantity, price (str or
    None)}). session_partitions: list of session dicts (session_id, end,
    duration_ms, page_views, converted, revision, tombstone).
    Returns ({(size, start): Window}, stats)."""
    W = defaultdict(Window)
    stats = {"late": 0, "duplicate": 0, "applied": 0, "late_ids": [], "undecodable": 0,
             "sessions_applied": 0, "sessions_late": 0, "sessions_ignored": 0,
             "revisions_as_new": 0}
    for events in raw_partitions:
        maxts, seen = None, set()
        for ev in events:
            if ev is None:
                stats["undecodable"] += 1
                _count_late(W, maxts)
                continue
            t = ev["timestamp"]
            wm = None if maxts is None else maxts - bound
            if _late(t, wm, lateness):
                stats["late"] += 1
                stats["late_ids"].append(ev["event_id"])
                _count_late(W, maxts)
                continue
            if ev["event_id"] in seen:
                stats["duplicate"] += 1
                continue
            seen.add(ev["event_id"])
            stats["applied"] += 1
            et = ev["event_type"]
            md = ev.get("metadata") or {}
            rev = 0
            if et == "purchase" and md.get("price") is not None:
                rev = price_micros(md["price"]) * (md.get("quantity") or 1)
            vals = {
                "url": ev.get("page_url"),
                "category": md.get("category"),
                "device_type": (ev.get("device") or {}).get("type"),
                "country": (ev.get("geo") or {}).get("country"),
                "event_type": et,
            }
            for size in SIZES:
                w = W[(size, wstart(t, size))]
                w.events += 1
                w.page_views += et == "page_view"
                w.purchases += et == "purchase"
                w.revenue_micros += rev
                w.users.add(ev["user_id"])
                for d, v in vals.items():
                    if v:
                        w.counts[d][v] += 1
            maxts = t if maxts is None else max(maxts, t)
    for sessions in session_partitions:
        maxend, entries = None, {}
        for s in sessions:
            wm = None if maxend is None else maxend - bound
            e = entries.get(s["session_id"])
            if e is not None and s["revision"] <= e["revision"]:
                stats["sessions_ignored"] += 1
                continue
            if e is not None and _late(e["end"], wm, lateness):
                # the earlier revision's window is closed (final): it keeps
                # that revision, this one counts as a new session
                stats["revisions_as_new"] += 1
                del entries[s["session_id"]]
                e = None
            if not s["tombstone"] and _late(s["end"], wm, lateness):
                stats["sessions_late"] += 1
                continue
            if e is not None and e["counted"]:
                _session_apply(W, e, -1)
                e["counted"] = False
            if e is None:
                e = entries[s["session_id"]] = {"counted": False}
            e["revision"] = s["revision"]
            e["end"] = max(e.get("end", s["end"]), s["end"])
            stats["sessions_applied"] += 1
            if s["tombstone"]:
                continue
            e.update(end=s["end"], dur=s["duration_ms"], bounce=s["page_views"] == 1,
                     conv=bool(s["converted"]), counted=True)
            _session_apply(W, e, +1)
            maxend = s["end"] if maxend is None else max(maxend, s["end"])
    return W, stats


def _count_late(W, maxts):
    if maxts is not None:
        for size in SIZES:
            W[(size, wstart(maxts, size))].late += 1


def _session_apply(W, e, sign):
    for size in SIZES:
        w = W[(size, wstart(e["end"], size))]
        w.sessions += sign
        w.session_ms_sum += sign * e["dur"]
        w.bounces += sign * int(e["bounce"])
        w.conversions += sign * int(e["conv"])


def price_micros(p):
    """'12.5' -> 12500000, exactly."""
    p = str(p)
    if "." in p:
        a, b = p.split(".", 1)
        b = (b + "000000")[:6]
    else:
        a, b = p, "000000"
    return int(a) * 1000000 + int(b)
