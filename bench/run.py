"""The relay benchmark harness (`make bench`). See bench/README.md.

    python -m bench.run [--levels 1,50,200,500] [--runs 3] [--tokens 200] [--gap 0.02]
                        [--first-delay 0.05] [--mode embedded|services]

Per level and run: the same N streams read directly from the fake upstream (the physical limit),
then a fresh daphne (as deployed, DEBUG off) with N logged-in websockets, each sending one message,
all at once; every reply is read to the end and checked against the database afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.common import median, percentile, proc_status_kb, reply_text, system_busy_seconds

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
DAPHNE = str(Path(sys.executable).with_name("daphne"))
API_KEY = "bench-key"
ORIGIN_HOST = "127.0.0.1"
CONTENT = "Tell me how the relay works."
PROBE = "[[bench tokens=1]] probe"
PG_ADMIN_URL = "postgres://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/13"
BENCH_PASSWORD = "bench-password-not-secret"


def _raise_priority() -> None:
    """The fake upstream and the load client run ahead of the app (nice -10, as root), so that on
    a 2-core machine a saturated app delays neither the upstream's schedule nor the client's
    timestamps. Both use little CPU; without the privilege this is silently skipped."""
    with contextlib.suppress(OSError):
        os.nice(-10)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port} after {timeout} s")


def stop(proc: subprocess.Popen, timeout: float = 10) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class Fake:
    """The fake upstream subprocess."""

    def __init__(self, args, logdir: Path) -> None:
        self.log = open(logdir / "fake_upstream.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                *(PYTHON, "-m", "bench.fake_upstream_server", "--tokens", str(args.tokens)),
                *("--gap", str(args.gap), "--first-delay", str(args.first_delay)),
                *("--api-key", API_KEY),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            preexec_fn=_raise_priority,
        )
        line = self.proc.stdout.readline()
        self.port = json.loads(line)["port"]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"

    def _call(self, method: str, path: str) -> dict:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/v1/{path}", method=method)
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 (loopback)
            return json.loads(resp.read())

    def reset(self) -> None:
        self._call("POST", "reset")

    def stats(self) -> dict:
        return self._call("GET", "stats")

    def close(self) -> None:
        stop(self.proc)
        self.log.close()


def wait_quiet(limit: float, max_wait: float) -> float:
    """Wait (at most max_wait s) until the machine's busy CPU over one second is below `limit`
    cores: other people's test runs on a shared 2-core machine would distort the numbers.
    Returns the last reading."""
    deadline = time.monotonic() + max_wait
    while True:
        b0, t0 = system_busy_seconds(), time.monotonic()
        time.sleep(1.0)
        busy = (system_busy_seconds() - b0) / (time.monotonic() - t0)
        if busy < limit or time.monotonic() >= deadline:
            if busy >= limit:
                log(f"machine still busy ({busy:.2f} cores) after {max_wait:g} s; running anyway")
            return busy


# --- the database -------------------------------------------------------------------------------
def setup_django(env: dict[str, str], source: Path) -> None:
    os.environ.update(env)
    os.environ["DJANGO_SETTINGS_MODULE"] = "serika_web.settings"
    sys.path.insert(0, str(source))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    call_command("collectstatic", verbosity=0, interactive=False)


def create_members(n: int) -> list[dict]:
    """n members who log in with a password (`BENCH_PASSWORD`), as the browser-like client
    does: their usernames. One hash for all, made once (each costs ~0.3 s of CPU)."""
    from django.contrib.auth.hashers import make_password
    from django.contrib.auth.models import User
    from django.utils.crypto import get_random_string

    stamp = get_random_string(6).lower()
    password = make_password(BENCH_PASSWORD)
    users = User.objects.bulk_create(
        [User(username=f"member-{stamp}-{i}", password=password) for i in range(n)]
    )
    return [{"username": user.username, "password": BENCH_PASSWORD} for user in users]


def create_character() -> int:
    """The character every member chats with in the browser-like runs: a short card with a
    greeting, as an admin would add it (the prompt then has a system message)."""
    from characters.models import Character, Visibility

    character = Character.objects.create(
        name="Bench",
        description="{{char}} explains how software works, briefly and precisely.",
        personality="patient, exact",
        scenario="{{user}} asks {{char}} about a web application.",
        first_mes="Hello {{user}}, what shall we look at?",
        visibility=Visibility.EVERYONE,
    )
    return character.pk


def create_users(n: int) -> list[tuple[int, str]]:
    """n users with sessions: (user id, session cookie value). Passwords are unusable, sessions
    are written as django.contrib.auth.login writes them (the lean client's way)."""
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.auth.hashers import make_password
    from django.contrib.auth.models import User
    from django.contrib.sessions.backends.db import SessionStore
    from django.contrib.sessions.models import Session
    from django.utils.crypto import get_random_string

    stamp = get_random_string(6).lower()
    users = User.objects.bulk_create(
        [User(username=f"bench-{stamp}-{i}", password=make_password(None)) for i in range(n)]
    )
    users = list(User.objects.filter(username__startswith=f"bench-{stamp}-").order_by("pk"))
    store = SessionStore()
    expire = datetime.now(UTC) + timedelta(days=1)
    sessions, out = [], []
    for user in users:
        key = get_random_string(32, "abcdefghijklmnopqrstuvwxyz0123456789")
        data = {
            SESSION_KEY: str(user.pk),
            BACKEND_SESSION_KEY: "django.contrib.auth.backends.ModelBackend",
            HASH_SESSION_KEY: user.get_session_auth_hash(),
        }
        sessions.append(
            Session(session_key=key, session_data=store.encode(data), expire_date=expire)
        )
        out.append((user.pk, key))
    Session.objects.bulk_create(sessions)
    return out


def create_conversations(user_ids: list[int]) -> list[int]:
    from chat.models import Conversation

    convs = Conversation.objects.bulk_create(
        [Conversation(owner_id=uid, title="bench", model="bench-model") for uid in user_ids]
    )
    return [c.pk for c in convs]


def verify(reply_ids: list[int], expected: str) -> dict[int, str]:
    """Problems with the stored replies, by id: each must be `complete` with the full text."""
    from chat.models import Message

    rows = {
        pk: (status, content)
        for pk, status, content in Message.objects.filter(pk__in=reply_ids).values_list(
            "pk", "status", "content"
        )
    }
    problems = {}
    for rid in reply_ids:
        if rid not in rows:
            problems[rid] = "not stored"
        elif rows[rid][0] != "complete":
            problems[rid] = f"stored {rows[rid][0]}"
        elif rows[rid][1] != expected:
            problems[rid] = "stored text differs"
    return problems


def close_db() -> None:
    from django.db import connections

    connections.close_all()


# --- one run ------------------------------------------------------------------------------------
def run_client(spec: dict, tmp: Path, name: str, timeout: float) -> dict:
    spec_path, result_path = tmp / f"{name}.spec.json", tmp / f"{name}.result.json"
    spec_path.write_text(json.dumps(spec))
    subprocess.run(
        [PYTHON, "-m", "bench.load_client", str(spec_path), str(result_path)],
        cwd=ROOT,
        check=True,
        timeout=timeout,
        preexec_fn=_raise_priority,
    )
    return json.loads(result_path.read_text())


def server_command(args) -> list[str]:
    """daphne as the measured commit deploys it: through its uvloop launcher when it has one."""
    if args.loop == "uvloop" and (Path(args.source) / "serika_web" / "serve.py").exists():
        return [PYTHON, "-m", "serika_web.serve"]
    return [DAPHNE]


def start_apps(args, env: dict[str, str], tmp: Path, tag: str) -> list[dict]:
    apps = []
    for k in range(2 if args.mode == "services" else 1):
        port = free_port()
        counter = tmp / f"counters-{tag}-{k}.bin"
        counter.write_bytes(b"\0" * 128)
        app_log = open(tmp / f"daphne-{tag}-{k}.log", "w")  # noqa: SIM115
        proc = subprocess.Popen(
            [*server_command(args), "-b", "127.0.0.1", "-p", str(port), args.asgi],
            cwd=args.source,
            env={
                **os.environ,
                **env,
                "BENCH_COUNTER_FILE": str(counter),
                "PYTHONPATH": f"{args.source}:{ROOT}",
            },
            stdout=app_log,
            stderr=subprocess.STDOUT,
        )
        apps.append({"proc": proc, "port": port, "counter": str(counter), "log": app_log})
    for app in apps:
        wait_port(app["port"], app["proc"])
    return apps


def stop_apps(apps: list[dict]) -> None:
    for app in apps:
        stop(app["proc"])
        app["log"].close()


def app_address(app: dict) -> dict:
    return {
        "host": "127.0.0.1",
        "port": app["port"],
        "origin": f"http://{ORIGIN_HOST}:{app['port']}",
    }


def one_run(args, env, tmp, fake, users, warm_users, character, n: int, run: int) -> dict:
    tag = f"n{n}-r{run}"
    expected = reply_text(args.tokens)
    probe_expected = reply_text(1)
    stream_time = args.first_delay + args.tokens * args.gap
    # Generous for a working relay (3 times the stream, plus set-up time); an overloaded one is cut
    # off and its unfinished replies count as errors.
    timeout = 30 + 3 * stream_time + n * 0.06

    # 1. The physical limit: the same N streams straight from the fake upstream.
    if args.quiet_wait:
        wait_quiet(args.quiet_below, args.quiet_wait)
    fake.reset()
    direct = run_client(
        {
            "mode": "direct",
            "n": n,
            "host": "127.0.0.1",
            "port": fake.port,
            "path": "/v1/chat/completions",
            "api_key": API_KEY,
            "fake_pids": [fake.proc.pid],
            "content": CONTENT,
            "expected": expected,
            "timeout": timeout,
        },
        tmp,
        f"direct-{tag}",
        timeout + 60,
    )
    direct["fake"] = fake.stats()
    if args.direct_only:
        d = stream_stats(direct["main"]["replies"])
        return {
            "n": n,
            "direct_errors": len(direct["errors"])
            + sum(1 for x in direct["main"]["replies"] if x["error"]),
            "direct": d,
            "client_cpu_us_per_token": direct["main"]["client_cpu_s"] / max(1, d["tokens"]) * 1e6,
            "client_cpu_share": direct["main"]["client_cpu_s"] / direct["main"]["wall_s"],
            "fake": direct["fake"],
        }

    # 2. The relay: a fresh app process (two in services mode).
    if args.client == "lean":
        conv_ids = create_conversations([uid for uid, _ in users[:n]])
        warm_convs = create_conversations([uid for uid, _ in warm_users])
        close_db()
    if args.quiet_wait:
        wait_quiet(args.quiet_below, args.quiet_wait)
    apps = start_apps(args, env, tmp, tag)
    try:

        def target(i: int, conv: int, cookie: str) -> dict:
            app = apps[i % len(apps)]
            return {
                **app_address(app),
                "path": f"/ws/conversations/{conv}/",
                "cookie": f"sessionid={cookie}",
            }

        def member(i: int, cookies: dict) -> dict:
            # A member's browser, its session from the login phase, on app i % 2 like its
            # login: the chat page's socket goes to the process that served the page.
            return {**app_address(apps[i % len(apps)]), "cookies": cookies, "character": character}

        if args.client == "lean":
            targets = [target(i, conv_ids[i], users[i][1]) for i in range(n)]
            warm = [target(k, warm_convs[k], warm_users[k][1]) for k in range(len(apps))]
        else:
            targets = [member(i, users[i]) for i in range(n)]
            warm = [member(k, warm_users[k]) for k in range(len(apps))]
        spec = {
            "mode": "relay",
            "browser": args.client == "browser",
            "targets": targets,
            "warm": warm,
            "warm_content": PROBE,
            "warm_expected": probe_expected,
            "probe_content": PROBE,
            "probe_expected": probe_expected,
            "content": CONTENT,
            "expected": expected,
            "tokens": args.tokens,
            "timeout": timeout,
            "app_pids": [a["proc"].pid for a in apps],
            "fake_pids": [fake.proc.pid],
            "counter_files": [a["counter"] for a in apps],
        }
        fake.reset()
        profiler = None
        if args.profile and n == args.profile_level and run == 0:
            profiler = start_profiler(apps[0]["proc"].pid, tmp, tag, args)
        relay = run_client(spec, tmp, f"relay-{tag}", 3 * timeout + 120)
        relay["fake"] = fake.stats()
        if profiler is not None:
            finish_profiler(profiler)
        relay["app_rss_peak_kb"] = [proc_status_kb(a["proc"].pid, "VmHWM") for a in apps]
        relay["app_rss_end_kb"] = [proc_status_kb(a["proc"].pid, "VmRSS") for a in apps]
    finally:
        stop_apps(apps)

    if relay["errors"] or any(r["error"] for r in relay["main"]["replies"]):
        # Keep the app's log of a run with errors (the temp dir goes at the end).
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for k, app in enumerate(apps):
            shutil.copy(app["log"].name, out / f"daphne-{args.mode}-{tag}-{k}.log")
    main_ids = [r["reply_id"] for r in relay["main"]["replies"] if r["reply_id"]]
    probe_ids = [r["reply_id"] for r in relay["probe"]["replies"] if r["reply_id"]]
    relay["db_problems"] = verify(main_ids, expected)
    relay["db_problems_probe"] = verify(probe_ids, probe_expected)
    relay["missing_reply_ids"] = n - len(main_ids)
    close_db()
    return summarize(args, n, direct, relay)


def log_in_members(args, env, tmp: Path, members: list[dict]) -> list[dict]:
    """Every member logs in with the login form, once, before the runs (app processes of
    their own): their session cookies. Member i uses app i % 2, as in the runs."""
    apps = start_apps(args, env, tmp, "login")
    try:
        started = time.perf_counter()
        spec = {
            "mode": "login",
            "targets": [
                {**app_address(apps[i % len(apps)]), **member} for i, member in enumerate(members)
            ],
            "app_pids": [a["proc"].pid for a in apps],
        }
        result = run_client(spec, tmp, "login", 60 + 2 * len(members))
    finally:
        stop_apps(apps)
    if result["errors"]:
        raise SystemExit(f"login failed: {result['errors'][:5]}")
    phase = result["phase"]
    log(
        f"{len(members)} members logged in in {time.perf_counter() - started:.1f} s, app CPU "
        f"{1000 * phase['app_cpu_stat_s'] / len(members):.0f} ms per login"
    )
    return result["cookies"]


# --- py-spy -------------------------------------------------------------------------------------
def start_profiler(pid: int, tmp: Path, tag: str, args) -> dict | None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        log("py-spy not installed; --profile ignored")
        return None
    out = Path(args.profile_dir) / f"profile-{args.mode}-{tag}.folded"
    out.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [
            *(spy, "record", "--pid", str(pid), "--rate", str(args.profile_rate)),
            *("--format", "raw", "--output", str(out), "--nonblocking", "--threads"),
            *(["--gil"] if args.profile_gil else []),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return {"procs": [proc], "out": out}


def finish_profiler(profiler: dict) -> None:
    for proc in profiler["procs"]:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    log(f"profile written to {profiler['out']} (summarise: python -m bench.profile FILE)")


# --- numbers ------------------------------------------------------------------------------------
def _ms(v: float | None) -> float | None:
    return None if v is None else v * 1000


def stream_stats(replies: list[dict]) -> dict:
    ttfts = [r["ttft"] for r in replies if r["ttft"] is not None]
    gaps = [g for r in replies for g in r.get("gaps", [])]
    tokens = sum(r["tokens"] for r in replies)
    sends = [r["t_send"] for r in replies]
    lasts = [r["t_last"] for r in replies if r["t_last"] is not None]
    span = (max(lasts) - min(sends)) if lasts else None
    # First-come first-served: how soon do the first tenth of the burst (in send order) stream?
    ordered = sorted((r for r in replies if r["ttft"] is not None), key=lambda r: r["t_send"])
    tenth = max(1, len(ordered) // 10)
    return {
        "ttft_p50_ms": _ms(percentile(ttfts, 50)),
        "ttft_p95_ms": _ms(percentile(ttfts, 95)),
        "ttft_p99_ms": _ms(percentile(ttfts, 99)),
        "ttft_first10pct_p50_ms": _ms(percentile([r["ttft"] for r in ordered[:tenth]], 50)),
        "ttft_last10pct_p50_ms": _ms(percentile([r["ttft"] for r in ordered[-tenth:]], 50)),
        "gap_p50_ms": _ms(percentile(gaps, 50)),
        "gap_p99_ms": _ms(percentile(gaps, 99)),
        "frames_per_reply": sum(r["deltas"] for r in replies) / max(1, len(replies)),
        "tokens": tokens,
        "tokens_per_s": tokens / span if span else None,
    }


def summarize(args, n: int, direct: dict, relay: dict) -> dict:
    d = stream_stats(direct["main"]["replies"])
    r = stream_stats(relay["main"]["replies"])
    main, probe = relay["main"], relay["probe"]
    reply_errors = [x["error"] for x in main["replies"] if x["error"]]
    db_problems = {str(k): v for k, v in relay["db_problems"].items()}
    probe_errors = [x["error"] for x in probe["replies"] if x["error"]]
    tokens = max(1, r["tokens"])
    cpu_main = main["app_cpu_sched_s"]
    setup_per_req = probe["app_cpu_sched_s"] / n
    c = main["counters"]
    durations = [x["duration"] for x in main["replies"] if x["duration"]]
    out = {
        "n": n,
        "completed": sum(1 for x in main["replies"] if not x["error"]),
        # Connection errors + replies that failed in the socket or in the database (once each).
        "errors": len(relay["errors"])
        + len(
            {i for i, x in enumerate(main["replies"]) if x["error"]}
            | {i for i, x in enumerate(main["replies"]) if str(x["reply_id"]) in db_problems}
        ),
        "db_problems": len(db_problems),
        "error_samples": (
            relay["errors"] + reply_errors + [f"db: {v}" for v in db_problems.values()]
        )[:5],
        "probe_errors": len(probe_errors) + len(relay["db_problems_probe"]),
        "direct_errors": len(direct["errors"])
        + sum(1 for x in direct["main"]["replies"] if x["error"]),
        "relay": r,
        "direct": d,
        "added": {
            k: (r[k] - d[k]) if r[k] is not None and d[k] is not None else None
            for k in ("ttft_p50_ms", "ttft_p95_ms", "ttft_p99_ms", "gap_p50_ms", "gap_p99_ms")
        },
        "tokens_per_s_ratio": (r["tokens_per_s"] / d["tokens_per_s"])
        if r["tokens_per_s"] and d["tokens_per_s"]
        else None,
        "app_cpu_s": cpu_main,
        "app_cpu_stat_s": main["app_cpu_stat_s"],
        "app_cpu_ms_per_1k_tokens": cpu_main / tokens * 1e6,
        "app_cpu_ms_per_request": cpu_main / n * 1000,
        "app_setup_cpu_ms_per_request": setup_per_req * 1000,
        "app_marginal_us_per_token": max(0.0, cpu_main - setup_per_req * n) / tokens * 1e6,
        "app_connect_cpu_ms_per_socket": relay["connect"]["app_cpu_sched_s"] / n * 1000,
        "app_rss_peak_mb": max(relay["app_rss_peak_kb"]) / 1024,
        "app_rss_peak_mb_each": [kb / 1024 for kb in relay["app_rss_peak_kb"]],
        "db_reply_writes_per_reply": (
            c.get("message_insert_assistant", 0)
            + c.get("message_update_flush", 0)
            + c.get("message_update_final", 0)
        )
        / n,
        "db_user_inserts_per_reply": c.get("message_insert_user", 0) / n,
        "db_heartbeat_statements": c.get("message_update_heartbeat", 0),
        "db_other_writes_per_reply": c.get("other_writes", 0) / n,
        "db_queries_per_reply": c.get("queries", 0) / n,
        "reply_duration_s_p50": percentile(durations, 50),
        "client_cpu_s": main["client_cpu_s"],
        "client_cpu_us_per_token": main["client_cpu_s"] / tokens * 1e6,
        "client_cpu_share": main["client_cpu_s"] / main["wall_s"],
        "direct_client_cpu_us_per_token": direct["main"]["client_cpu_s"]
        / max(1, d["tokens"])
        * 1e6,
        "fake_lateness_ms_p99_relay": relay["fake"]["lateness_ms_p99"],
        "fake_lateness_ms_max_relay": relay["fake"]["lateness_ms_max"],
        "fake_lateness_ms_p99_direct": direct["fake"]["lateness_ms_p99"],
        "fake_cpu_s_relay": relay["fake"]["cpu_s"],
        # Warm-up, probe and main burst together: about N when connections are reused.
        "upstream_connections": relay["fake"].get("connections_opened"),
        "foreign_cpu_share": main["foreign_cpu_s"] / main["wall_s"],
        "direct_foreign_cpu_share": direct["main"]["foreign_cpu_s"] / direct["main"]["wall_s"],
        "resyncs": sum(x.get("resyncs", 0) for x in main["replies"]),
        "wall_s": main["wall_s"],
    }
    if "start" in relay:  # the browser-like client: home page, its form, the chat page
        start = relay["start"]
        out["chat_start_s_p50"] = percentile(start["seconds"], 50)
        out["chat_start_s_p99"] = percentile(start["seconds"], 99)
        out["app_cpu_ms_per_chat_start"] = start["app_cpu_sched_s"] / n * 1000
        out["app_cpu_ms_per_sync"] = relay["sync"]["app_cpu_sched_s"] / n * 1000
    return out


TARGETS = {
    # n: (added ttft p99 ms, added gap p99 ms, tokens/s ratio) ; N=1 uses added ttft p50
    1: {"added_ttft_p50_ms": 5, "added_gap_p99_ms": 2},
    200: {"errors": 0, "added_ttft_p99_ms": 1000, "added_gap_p99_ms": 30},
    500: {
        "errors": 0,
        "added_ttft_p99_ms": 3000,
        "added_gap_p99_ms": 60,
        "tokens_per_s_ratio": 0.95,
        "rss_mb": 250,
        "setup_cpu_ms": 5,
        "marginal_us_per_token": 40,
    },
}


def aggregate(runs: list[dict]) -> dict:
    """Medians over runs (errors: the sum)."""

    def med(get):
        return median([get(x) for x in runs])

    agg = {
        "n": runs[0]["n"],
        "runs": len(runs),
        "errors": sum(x["errors"] for x in runs),
        "probe_errors": sum(x["probe_errors"] for x in runs),
        "direct_errors": sum(x["direct_errors"] for x in runs),
        "error_samples": [s for x in runs for s in x["error_samples"]][:5],
    }
    for section in ("relay", "direct", "added"):
        agg[section] = {k: med(lambda x, k=k, s=section: x[s][k]) for k in runs[0][section]}
    for k, v in runs[0].items():
        if k not in agg and (v is None or isinstance(v, int | float)):
            agg[k] = med(lambda x, k=k: x[k])
    agg["app_rss_peak_mb_max"] = max(x["app_rss_peak_mb"] for x in runs)
    return agg


def _f(v, digits=1) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def table(aggs: list[dict]) -> str:
    head = (
        "| N | errors | TTFT p50/p95/p99 ms (direct p99) | first 10 % TTFT p50 ms "
        "| added TTFT p50/p99 ms "
        "| gap p50/p99 ms (direct p99) | added gap p99 ms | tok/s relay/direct | CPU ms/1k tok "
        "| set-up CPU ms/req | µs/token marginal | RSS MB | DB writes/reply (dur s) "
        "| client µs/tok | fake late p99 ms |\n|" + "---|" * 15
    )
    rows = [head]
    for a in aggs:
        r, d, ad = a["relay"], a["direct"], a["added"]
        rows.append(
            f"| {a['n']} | {a['errors']}/{a['n'] * a['runs']} "
            f"| {_f(r['ttft_p50_ms'])}/{_f(r['ttft_p95_ms'])}/{_f(r['ttft_p99_ms'])} "
            f"({_f(d['ttft_p99_ms'])}) | {_f(r['ttft_first10pct_p50_ms'])} "
            f"| {_f(ad['ttft_p50_ms'])}/{_f(ad['ttft_p99_ms'])} "
            f"| {_f(r['gap_p50_ms'])}/{_f(r['gap_p99_ms'])} ({_f(d['gap_p99_ms'])}) "
            f"| {_f(ad['gap_p99_ms'])} "
            f"| {_f(r['tokens_per_s'], 0)}/{_f(d['tokens_per_s'], 0)} "
            f"({_f(100 * (a.get('tokens_per_s_ratio') or 0), 0)} %) "
            f"| {_f(a['app_cpu_ms_per_1k_tokens'], 0)} "
            f"| {_f(a['app_setup_cpu_ms_per_request'], 2)} "
            f"| {_f(a['app_marginal_us_per_token'], 0)} | {_f(a['app_rss_peak_mb_max'], 0)} "
            f"| {_f(a['db_reply_writes_per_reply'], 2)} ({_f(a['reply_duration_s_p50'], 2)}) "
            f"| {_f(a['client_cpu_us_per_token'], 1)} "
            f"| {_f(a['fake_lateness_ms_p99_relay'], 2)} |"
        )
    return "\n".join(rows)


def check_targets(aggs: list[dict]) -> list[str]:
    lines = []
    for a in aggs:
        n, ad = a["n"], a["added"]

        def say(name, value, limit, higher_is_better=False, n=n):
            if value is None:
                lines.append(f"N={n} {name}: no value")
                return
            ok = value >= limit if higher_is_better else value <= limit
            lines.append(
                f"N={n} {name}: {value:.3g} (target {'≥' if higher_is_better else '≤'} "
                f"{limit:g}) {'met' if ok else 'MISSED'}"
            )

        if n == 1:
            say("added TTFT p50 ms", ad["ttft_p50_ms"], 5)
            say("added gap p99 ms", ad["gap_p99_ms"], 2)
        if n in (200, 500):
            say("errors", a["errors"], 0)
            say("added TTFT p99 ms", ad["ttft_p99_ms"], 1000 if n == 200 else 3000)
            say("added gap p99 ms", ad["gap_p99_ms"], 30 if n == 200 else 60)
        if n == 500:
            say("tokens/s vs direct", a["tokens_per_s_ratio"], 0.95, True)
            say("RSS MB", a["app_rss_peak_mb_max"], 250)
            say("set-up CPU ms/request", a["app_setup_cpu_ms_per_request"], 5)
            say("CPU µs per relayed token (marginal)", a["app_marginal_us_per_token"], 40)
        if a["reply_duration_s_p50"]:
            say(
                "DB writes per reply",
                a["db_reply_writes_per_reply"],
                2 + a["reply_duration_s_p50"],
            )
    return lines


# --- main ---------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Relay benchmark (see bench/README.md).")
    parser.add_argument("--levels", default="1,50,200,500")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--gap", type=float, default=0.02)
    parser.add_argument("--first-delay", type=float, default=0.05)
    parser.add_argument("--mode", choices=("embedded", "services"), default="embedded")
    parser.add_argument(
        "--client",
        choices=("browser", "lean"),
        default="browser",
        help="browser: members log in and start chats over HTTP and sync as the page does; "
        "lean: sessions and chats written by the ORM, sockets only (the old bench)",
    )
    parser.add_argument(
        "--asgi",
        default="bench.app:application",
        help="the ASGI app daphne serves; serika_web.asgi:application skips the DB-write counter",
    )
    parser.add_argument(
        "--loop",
        choices=("uvloop", "asyncio"),
        default="uvloop",
        help="uvloop: start daphne through serika_web.serve when the measured commit has it",
    )
    parser.add_argument("--extras", action=argparse.BooleanOptionalAction, default=True,
                        help="also run the render and chat-page benchmarks")  # fmt: skip
    parser.add_argument(
        "--db-params",
        default="",
        help="query string for DATABASE_URL, e.g. conn_max_age=600 (what-if experiments)",
    )
    parser.add_argument(
        "--app-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the app processes (what-if experiments)",
    )
    parser.add_argument(
        "--direct-only", action="store_true", help="only the direct baseline (checks the fake)"
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=15,
        help="before each phase wait up to this many seconds for the machine to be idle (0: no)",
    )
    parser.add_argument(
        "--max-foreign",
        type=float,
        default=0.4,
        help="repeat a run during which other processes used more than this many cores",
    )
    parser.add_argument("--retries", type=int, default=2, help="repeats of a disturbed run")
    parser.add_argument(
        "--quiet-below", type=float, default=0.25, help="idle = busy CPU below this many cores"
    )
    parser.add_argument(
        "--keep-going",
        action="store_true",
        help="run every run and level even after one where most replies failed",
    )
    parser.add_argument(
        "--source-rev",
        default="",
        help="benchmark this commit (exported with git archive) instead of the working tree",
    )
    parser.add_argument("--profile", action="store_true", help="py-spy the app in one run")
    parser.add_argument("--profile-level", type=int, default=200)
    parser.add_argument("--profile-rate", type=int, default=100)
    parser.add_argument(
        "--profile-gil",
        action="store_true",
        help="sample only the thread holding the GIL: CPU shares of a GIL-bound process",
    )
    parser.add_argument("--profile-dir", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args(argv)
    levels = [int(x) for x in args.levels.split(",") if x]

    tmp = Path(tempfile.mkdtemp(prefix="serika-bench-"))
    fake = Fake(args, tmp)
    pg_db = None
    env = {
        "DEBUG": "false",
        "SECRET_KEY": "bench-" + os.urandom(16).hex(),
        "SECURE_HTTPS": "false",
        "ALLOWED_HOSTS": ORIGIN_HOST,
        "SERIKA_API_KEY": API_KEY,
        "SERIKA_BASE_URL": fake.base_url,
        "STATIC_ROOT": str(tmp / "static"),
        "DATA_DIR": str(tmp),
        "MEDIA_ROOT": str(tmp / "media"),
        "REDIS_URL": "",
    }
    try:
        if args.mode == "services":
            pg_db = f"serika_bench_{os.getpid()}"
            admin_pg(f'CREATE DATABASE "{pg_db}"')
            env["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{pg_db}"
            if args.db_params:
                env["DATABASE_URL"] += "?" + args.db_params
            env["REDIS_URL"] = REDIS_URL
            flush_redis()  # the bench's own db: no groups or channels left from an earlier run
        else:
            env["DATABASE_URL"] = f"sqlite:///{tmp / 'bench.sqlite3'}"
            if args.db_params:
                env["DATABASE_URL"] += "?" + args.db_params
        env.update(dict(kv.split("=", 1) for kv in args.app_env))
        args.source, args.source_desc = app_source(args, tmp)
        log(f"mode {args.mode}; app {args.source_desc}; fake upstream on {fake.port}; temp {tmp}")
        setup_django(env, Path(args.source))
        character = None
        if args.client == "lean":
            users = create_users(max(levels, default=1))
            warm_users = create_users(2)
            close_db()
        else:
            character = create_character()
            members = create_members(max(levels, default=1) + 2)
            close_db()
            cookies = log_in_members(args, env, tmp, members)
            users, warm_users = cookies[2:], cookies[:2]
        results = {"args": vars(args), "levels": {}, "extras": {}}
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{time.strftime('%Y%m%d-%H%M%S')}-{args.mode}.json"

        def save() -> None:  # after every run, so a cut-off benchmark keeps what it measured
            path.write_text(json.dumps(results, indent=1, default=str))

        aggs = []
        collapsed = 0
        for n in levels:
            runs = []
            if collapsed:
                log(f"N={n} skipped: the relay collapsed at N={collapsed}")
                results["levels"][n] = {"skipped": f"collapsed at N={collapsed}"}
                continue
            for run in range(args.runs):
                for attempt in range(args.retries + 1):
                    x = one_run(args, env, tmp, fake, users, warm_users, character, n, run)
                    foreign = x.get("foreign_cpu_share", 0) or 0
                    x["attempt"] = attempt
                    if foreign <= args.max_foreign or attempt == args.retries:
                        break
                    log(
                        f"N={n} run {run + 1}: other processes used {foreign:.2f} cores "
                        "meanwhile; run discarded and repeated"
                    )
                    if args.quiet_wait:
                        wait_quiet(args.quiet_below, 4 * args.quiet_wait)
                x["contaminated"] = foreign > args.max_foreign
                runs.append(x)
                results["levels"][n] = {"runs": runs}
                save()
                if args.direct_only:
                    log(f"N={n} run {run + 1} direct: {json.dumps(x, default=str)}")
                    continue
                if x["errors"] > n / 2 and not args.keep_going:
                    collapsed = n
                log(
                    f"N={n} run {run + 1}: errors {x['errors']}, added TTFT p99 "
                    f"{_f(x['added']['ttft_p99_ms'])} ms, gap p99 {_f(x['relay']['gap_p99_ms'])} "
                    f"ms, {_f(x['app_cpu_ms_per_1k_tokens'], 0)} ms CPU/1k tok, set-up "
                    f"{_f(x['app_setup_cpu_ms_per_request'], 2)} ms/req, RSS "
                    f"{_f(x['app_rss_peak_mb'], 0)} MB, tok/s {_f(x['relay']['tokens_per_s'], 0)}"
                    f"/{_f(x['direct']['tokens_per_s'], 0)}, foreign CPU "
                    f"{_f(100 * x['foreign_cpu_share'], 0)} % of a core"
                    + (
                        f"; chat start p50/p99 {_f(x['chat_start_s_p50'], 2)}/"
                        f"{_f(x['chat_start_s_p99'], 2)} s, {_f(x['app_cpu_ms_per_chat_start'])} "
                        f"ms CPU each"
                        if "chat_start_s_p50" in x
                        else ""
                    )
                )
                if collapsed:
                    log(f"N={n}: more than half the replies failed; no more runs or levels")
                    break
            if args.direct_only:
                results["levels"][n] = {"runs": runs}
                continue
            results["levels"][n] = {"runs": runs, "median": aggregate(runs)}
            aggs.append(results["levels"][n]["median"])
        if args.extras:
            from bench import page_bench, render_bench, send_bench

            log("render benchmark")
            results["extras"]["render"] = render_bench.run()
            log("chat page benchmark")
            results["extras"]["page"] = page_bench.run()
            log("send set-up benchmark")
            results["extras"]["send"] = send_bench.run()
            close_db()
        if args.direct_only:
            return 0
        report = table(aggs)
        targets = check_targets(aggs)
        print("\n" + report + "\n")
        print("\n".join(targets))
        for name, value in results["extras"].items():
            print(f"{name}: {json.dumps(value)}")
        results["table"], results["targets"] = report, targets
        save()
        log(f"results in {path}")
        return 0
    finally:
        fake.close()
        close_db_quietly()
        if pg_db:
            admin_pg(f'DROP DATABASE IF EXISTS "{pg_db}" WITH (FORCE)')
            flush_redis()
        shutil.rmtree(tmp, ignore_errors=True)


def app_source(args, tmp: Path) -> tuple[str, str]:
    """Where the app under test comes from: the working tree, or `git archive REV` (read-only
    for the repository) so a run measures a fixed commit while others edit the tree."""
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", args.source_rev or "HEAD"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    if not args.source_rev:
        changed = subprocess.run(
            ["git", "-C", str(ROOT), "diff", "--name-only", "HEAD"], capture_output=True, text=True
        ).stdout.split()
        return str(ROOT), f"working tree at {head[:10]} + {len(changed)} changed files"
    src = tmp / "src"
    src.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", head],
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    return str(src), f"commit {head[:10]} (git archive)"


def close_db_quietly() -> None:
    with contextlib.suppress(Exception):
        close_db()


def flush_redis() -> None:
    """Empty the Redis database the bench uses (13, its own): conversation ids restart with
    each fresh PostgreSQL database, so group members left by an earlier run would get every
    event of the new run's conversations."""
    import redis

    with contextlib.suppress(Exception):
        redis.Redis.from_url(REDIS_URL).flushdb()


def admin_pg(sql: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql)


if __name__ == "__main__":
    sys.exit(main())
