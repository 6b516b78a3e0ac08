"""Reference sessionization (SPEC §3-§4), a plain batch algorithm written from
the rules in services/sessionizer/README.md, independent of the C code.

Input: the records of the raw topic, per partition in offset order, each a
decoded event dict (or None for an undecodable record). Output: the final
sessions (the last revision of each session_id that is not a tombstone) and
the event_ids sent to the late topic.

The rules, per partition, with wm = (highest event time seen so far on the
partition, this record included) - bound:
  * the sessions of a user are the batch split of its accepted events: sorted
    by (time, id hash), a new session wherever two consecutive events are more
    than `gap` apart;
  * a session is final when end + gap + lateness <= wm;
  * an event "touches" a session when start - gap <= t <= end + gap;
  * an event is late when it touches a final session, or touches no session
    and t + gap + lateness <= wm; otherwise it is accepted unless its event_id
    was accepted before on the partition and wm <= that copy's time + bound +
    lateness (a duplicate);
  * a user whose sessions all ended before wm - 2 gap - lateness (checked with
    the watermark before the record) is forgotten: its past no longer makes
    anything late (the service keeps that past exactly that long).
Nothing here is incremental: the sessions are recomputed from the accepted
events for every record, which is slow and obviously right.
"""

GAP_MS = 30 * 60 * 1000
BOUND_MS = 10 * 1000
LATENESS_MS = 5 * 60 * 1000

M64 = (1 << 64) - 1


def h64(s):
    """The id hash of libcommon/cm_dedupe.h: FNV-1a 64 then fmix64, 0 -> 1."""
    h = 0xcbf29ce484222325
    for b in s.encode():
        h = ((h ^ b) * 0x100000001b3) & M64
    h ^= h >> 33
    h = (h * 0xff51afd7ed558ccd) & M64
    h ^= h >> 33
    h = (h * 0xc4ceb9fe1a85ec53) & M64
    h ^= h >> 33
    return h or 1


def session_id(user_id, first_event_id):
    return "%016x%016x" % (h64(user_id), h64(first_event_id))


def order_key(ev):
    return (ev["timestamp"], h64(ev["event_id"]))


def split(events, gap):
    """Batch sessionization of one user's events: list of lists."""
    out = []
    for ev in sorted(events, key=order_key):
        if out and ev["timestamp"] - out[-1][-1]["timestamp"] <= gap:
            out[-1].append(ev)
        else:
            out.append([ev])
    return out


def summarize(user_id, evs):
    """The SPEC §4 fields of one session (events sorted by order_key)."""
    first, last = evs[0], evs[-1]
    with_url = [e for e in evs if e.get("page_url") is not None]
    revenue = 0
    for e in evs:
        if e["event_type"] == "purchase" and e.get("price_micros") is not None:
            revenue += e["price_micros"] * (e.get("quantity") or 1)
    return {
        "session_id": session_id(user_id, first["event_id"]),
        "user_id": user_id,
        "start": first["timestamp"],
        "end": max(e["timestamp"] for e in evs),
        "duration_ms": max(e["timestamp"] for e in evs) - first["timestamp"],
        "event_count": len(evs),
        "page_views": sum(1 for e in evs if e["event_type"] == "page_view"),
        "entry_url": with_url[0]["page_url"] if with_url else None,
        "exit_url": with_url[-1]["page_url"] if with_url else None,
        "device_type": first.get("device_type"),
        "country": first.get("country"),
        "converted": any(e["event_type"] == "purchase" for e in evs),
        "revenue_micros": revenue,
    }


def run_partition(records, gap=GAP_MS, bound=BOUND_MS, lateness=LATENESS_MS):
    """records: the partition's records in offset order (dict or None).
    Returns (accepted events by user, late event_ids, undecodable count,
    duplicate count)."""
    accepted = {}   # user -> list of accepted events (all of them, for the output)
    remembered = {}  # user -> accepted events that still count for lateness
    first_copy = {}  # event_id -> time of the accepted copy
    late, undecodable, duplicates = [], 0, 0
    max_ts = None
    for ev in records:
        if ev is None:
            undecodable += 1
            continue
        t, user = ev["timestamp"], ev["user_id"]
        wm_before = None if max_ts is None else max_ts - bound
        if user in remembered and wm_before is not None:
            ends = [e["timestamp"] for e in remembered[user]]
            if max(ends) + 2 * gap + lateness <= wm_before:
                del remembered[user]
        max_ts = t if max_ts is None else max(max_ts, t)
        wm = max_ts - bound
        touches_final = touches_live = False
        for s in split(remembered.get(user, []), gap):
            start, end = s[0]["timestamp"], max(e["timestamp"] for e in s)
            if start - gap <= t <= end + gap:
                if end + gap + lateness <= wm:
                    touches_final = True
                else:
                    touches_live = True
        if touches_final or (not touches_live and t + gap + lateness <= wm):
            late.append(ev["event_id"])
            continue
        eid = ev["event_id"]
        if eid in first_copy and not wm > first_copy[eid] + bound + lateness:
            duplicates += 1
            continue
        first_copy[eid] = t
        accepted.setdefault(user, []).append(ev)
        remembered.setdefault(user, []).append(ev)
    return accepted, late, undecodable, duplicates


def reference(partitions, gap=GAP_MS, bound=BOUND_MS, lateness=LATENESS_MS):
    """partitions: {partition: [event dict or None, ...]} in offset order.
    Returns {'sessions': {session_id: fields}, 'late': set of event_ids,
    'late_counts': {event_id: copies sent to the late topic}, 'undecodable': n,
    'duplicates': n}. Every session is listed, closed or not; the caller drops
    those the watermark has not closed."""
    sessions, late, late_counts, undecodable, duplicates = {}, set(), {}, 0, 0
    for records in partitions.values():
        acc, lt, und, dup = run_partition(records, gap, bound, lateness)
        late.update(lt)
        for eid in lt:
            late_counts[eid] = late_counts.get(eid, 0) + 1
        undecodable += und
        duplicates += dup
        for user, evs in acc.items():
            for s in split(evs, gap):
                rec = summarize(user, s)
                sessions[rec["session_id"]] = rec
    return {"sessions": sessions, "late": late, "late_counts": late_counts,
            "undecodable": undecodable, "duplicates": duplicates}
