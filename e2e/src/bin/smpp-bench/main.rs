//! smpp-bench: the benchmarks behind `make bench`. Runs the gateway, operator and Kannel
//! benchmarks against the real parts of `make env-up` and the compiled sink, prints the
//! figures and writes docs/benchmarks.md. Every load is on 127.0.0.1, bounded in count and time.
//!
//!   smpp-bench run [--out docs/benchmarks.md] [--only gateway,kannel,operator,messages,session,forward,customers] [--quick]
//!   smpp-bench sink [--listeners 1] [--seconds 60]   (a standalone sink, prints its ports)

mod common;
mod customers;
mod forward;
mod gateway;
mod kannel;
mod load;
mod messages;
mod operator;
mod session;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use smpp_e2e::bench::{Better, Comparison, Report, Section, render};
use smpp_e2e::env::Env;
use smpp_e2e::process::repo_root;
use smpp_e2e::sink::{Credentials, Sink};

#[derive(Parser)]
#[command(name = "smpp-bench")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the benchmarks and write the report.
    Run {
        /// Report file (markdown).
        #[arg(long, default_value = "docs/benchmarks.md")]
        out: PathBuf,
        /// Comma-separated suites: gateway, kannel, operator, messages, session, forward,
        /// customers.
        #[arg(
            long,
            default_value = "gateway,kannel,operator,messages,session,forward,customers"
        )]
        only: String,
        /// Fewer runs and smaller loads (a smoke test of the benchmarks themselves).
        #[arg(long)]
        quick: bool,
        /// How `make bench` was invoked, for the report.
        #[arg(long, default_value = "make bench")]
        command: String,
    },
    /// A standalone sink accepting any bind; stops by itself after --seconds.
    Sink {
        #[arg(long, default_value_t = 1)]
        listeners: usize,
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
}

/// Runs and loads, full or quick.
struct Plan {
    cheap_runs: usize,
    heavy_runs: usize,
    changes: usize,
    fleet: usize,
    compare_n: usize,
    idle: Duration,
    /// Idle CPU window of the cold starts compared with Kannel: longer than the enquire_link
    /// interval both use (30 s), so each bind's keep-alive falls inside it.
    held: Duration,
    applies: usize,
    operator_fleet: usize,
}

impl Plan {
    fn new(quick: bool) -> Self {
        if quick {
            Plan {
                cheap_runs: 1,
                heavy_runs: 1,
                changes: 4,
                fleet: 50,
                compare_n: 5,
                idle: Duration::from_secs(2),
                held: Duration::from_secs(2),
                applies: 4,
                operator_fleet: 20,
            }
        } else {
            Plan {
                cheap_runs: 5,
                heavy_runs: 3,
                changes: 20,
                fleet: 1000,
                compare_n: 50,
                idle: Duration::from_secs(10),
                held: Duration::from_secs(40),
                applies: 20,
                operator_fleet: 1000,
            }
        }
    }
}

impl Plan {
    /// Cold starts compared with Kannel: a small N for time alone, the fleet size with RSS and
    /// idle CPU too.
    fn cold_starts(&self) -> Vec<(usize, Option<Duration>)> {
        vec![(self.compare_n, None), (self.fleet, Some(self.held))]
    }
}

/// A cold-start section's medians, for the Kannel table.
#[derive(Clone, Default)]
struct ColdFigures {
    time: Option<f64>,
    rss: Option<f64>,
    cpu: Option<f64>,
}

impl ColdFigures {
    fn of(s: &Section, idle: Option<Duration>) -> Self {
        ColdFigures {
            time: s.median_of(gateway::COLD_TIME),
            rss: s.median_of(gateway::COLD_RSS),
            cpu: idle.and_then(|w| s.median_of(&gateway::cold_cpu(w))),
        }
    }
}

fn raise_fd_limit() {
    // 1,000 binds mean 2,000 sockets in this process (sink side) and 1,000 in the gateway.
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    rustls::crypto::ring::default_provider()
        .install_default()
        .map_err(|_| anyhow::anyhow!("a rustls crypto provider was already installed"))?;
    raise_fd_limit();
    match Cli::parse().cmd {
        Cmd::Sink { listeners, seconds } => run_sink(listeners, seconds).await,
        Cmd::Run {
            out,
            only,
            quick,
            command,
        } => {
            // On SIGTERM/SIGINT (e.g. the script's timeout) the run future is dropped, and with it
            // every ChildGuard: gateways, operators and bearerboxes are killed, not left behind.
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                r = run(out, &only, quick, command) => r,
                _ = term.recv() => anyhow::bail!("interrupted by SIGTERM; every process started was stopped"),
                _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted; every process started was stopped"),
            }
        }
    }
}

async fn run_sink(listeners: usize, seconds: u64) -> Result<()> {
    let sink = Sink::start(Credentials::Any, listeners).await?;
    println!(
        "sink listening on 127.0.0.1 ports {:?} for {seconds}s",
        sink.ports()
    );
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_secs(seconds)) => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    println!("{:?}", sink.counts());
    sink.stop().await;
    Ok(())
}

fn log(msg: &str) {
    eprintln!("bench: {msg}");
}

/// In run order: customers compares with the messages suite's Kannel and HTTP figures.
const SUITES: [&str; 7] = [
    "gateway",
    "kannel",
    "operator",
    "messages",
    "session",
    "forward",
    "customers",
];

/// What the suites produce; the Kannel suite compares with the gateway suite's medians.
#[derive(Default)]
struct Collected {
    sections: Vec<Section>,
    comparisons: Vec<Comparison>,
    ours_change: Option<f64>,
    ours_cold: Vec<ColdFigures>,
    /// The messages suite's Kannel best and our HTTP figures, for the customers suite.
    kannel_best: Option<messages::KannelBest>,
    http_ours: Vec<((u32, u32), messages::OursFigures)>,
}

async fn gateway_suite(env: &Env, plan: &Plan, c: &mut Collected) {
    log(&format!(
        "gateway: row change → bind, {} runs × {} changes",
        plan.cheap_runs, plan.changes
    ));
    let s = gateway::row_change(env, plan.cheap_runs, plan.changes).await;
    c.ours_change = s.median_of("p50");
    c.sections.push(s);
    log(&format!(
        "gateway: {} vendors × 1 bind, {} runs",
        plan.fleet, plan.heavy_runs
    ));
    c.sections
        .push(gateway::many_vendors(env, plan.heavy_runs, plan.fleet, plan.idle).await);
    for (n, idle) in plan.cold_starts() {
        log(&format!(
            "gateway: cold start with {n} vendors, {} runs",
            plan.heavy_runs
        ));
        let s = gateway::cold_start(env, plan.heavy_runs, n, idle).await;
        c.ours_cold.push(ColdFigures::of(&s, idle));
        c.sections.push(s);
    }
}

async fn kannel_suite(plan: &Plan, c: &mut Collected) {
    log(&format!(
        "kannel: restart → bound, {} runs",
        plan.cheap_runs
    ));
    let s = kannel::restart(plan.cheap_runs).await;
    c.comparisons.push(Comparison {
        what: "config change → bound with the new config (ours: row UPDATE p50; Kannel: edit conf + restart)".into(),
        unit: "ms",
        ours: c.ours_change,
        kannel: s.median_of("restart → bound"),
        better: Better::Lower,
    });
    c.sections.push(s);
    for (i, (n, idle)) in plan.cold_starts().into_iter().enumerate() {
        log(&format!(
            "kannel: cold start with {n} SMSC groups, {} runs",
            plan.heavy_runs
        ));
        let s = kannel::cold_start(plan.heavy_runs, n, idle).await;
        let theirs = ColdFigures::of(&s, idle);
        let ours = c.ours_cold.get(i).cloned().unwrap_or_default();
        let mut cmp = |what: String, unit: &'static str, o: Option<f64>, k: Option<f64>| {
            c.comparisons.push(Comparison {
                what,
                unit,
                ours: o,
                kannel: k,
                better: Better::Lower,
            })
        };
        cmp(
            format!("process start → {n} binds bound"),
            "ms",
            ours.time,
            theirs.time,
        );
        if idle.is_some() {
            cmp(
                format!("RSS holding {n} binds"),
                "MiB",
                ours.rss,
                theirs.rss,
            );
            cmp(
                format!(
                    "idle CPU holding {n} binds (over {}s: each bind's 30 s enquire_link falls inside)",
                    idle.map_or(0, |w| w.as_secs())
                ),
                "% of a core",
                ours.cpu,
                theirs.cpu,
            );
        }
        c.sections.push(s);
    }
}

async fn operator_suite(env: &Env, plan: &Plan, c: &mut Collected) {
    log(&format!(
        "operator: apply → row and Secret rotation → row, {} runs × {} applies",
        plan.heavy_runs, plan.applies
    ));
    c.sections
        .push(operator::apply_and_rotate(env, plan.heavy_runs, plan.applies).await);
    log(&format!(
        "operator + gateway: apply → BOUND in kubectl, {} runs",
        plan.cheap_runs
    ));
    c.sections
        .push(operator::apply_to_bound(env, plan.cheap_runs).await);
    log(&format!(
        "operator: {} SmppVendors at once, {} runs",
        plan.operator_fleet, plan.heavy_runs
    ));
    c.sections
        .push(operator::many(env, plan.heavy_runs, plan.operator_fleet).await);
}

/// The message path: the sink alone, ours at each shape, Kannel at each setting, the ratios.
async fn messages_suite(env: &Env, quick: bool, c: &mut Collected) {
    let plan = messages::MsgPlan::new(quick);
    log(&format!(
        "messages: the sink alone, {} runs × {} messages",
        plan.fast_runs, plan.ceiling_n
    ));
    c.sections.push(messages::ceiling(&plan).await);
    let mut ours = Vec::new();
    for (b, w) in messages::SHAPES {
        log(&format!(
            "messages: ours at {b} bind(s) × window {w}, {} runs",
            plan.fast_runs
        ));
        let (s, f) = messages::ours(env, &plan, b, w).await;
        c.sections.push(s);
        ours.push(((b, w), f));
    }
    log(&format!(
        "messages: Kannel at {:?} (binds, max-pending-submits), {} runs each",
        plan.kannel_settings, plan.slow_runs
    ));
    let (sections, best) = messages::kannel(&plan).await;
    log(&format!(
        "messages: Kannel receipts/s by setting: {}",
        messages::summary(&best)
    ));
    c.sections.extend(sections);
    c.comparisons.extend(messages::comparisons(&ours, &best));
    c.kannel_best = Some(best);
    c.http_ours = ours;
}

async fn run(out: PathBuf, only: &str, quick: bool, command: String) -> Result<()> {
    let wanted: Vec<&str> = only
        .split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .collect();
    if let Some(bad) = wanted.iter().find(|w| !SUITES.contains(w)) {
        anyhow::bail!(
            "unknown suite {bad:?} in --only (known: {})",
            SUITES.join(", ")
        );
    }
    let env = Env::load()
        .context("loading target/env.sh (make bench starts the environment when it is down)")?;
    // Before the suites: the tree may change while they run, the binaries measured do not.
    let versions = versions(&env).await;
    let plan = Plan::new(quick);
    let mut c = Collected::default();
    // In SUITES order: the Kannel suite compares with the gateway suite's figures.
    for suite in SUITES.into_iter().filter(|s| wanted.contains(s)) {
        let first = c.sections.len();
        match suite {
            "gateway" => gateway_suite(&env, &plan, &mut c).await,
            "kannel" => kannel_suite(&plan, &mut c).await,
            "messages" => messages_suite(&env, quick, &mut c).await,
            "session" => {
                let p = session::SessionPlan::new(quick);
                log(&format!(
                    "session: the session layer alone vs the raw exchange, {} runs × {} messages",
                    p.runs, p.n
                ));
                c.sections.push(session::suite(&p).await);
            }
            "forward" => {
                let p = forward::ForwardPlan::new(quick);
                log(&format!(
                    "forward: {} gateways, direct vs forwarded at {} msg/s, {} runs",
                    forward::PODS,
                    p.rate,
                    p.runs
                ));
                c.sections.push(forward::suite(&env, &p).await);
            }
            "customers" => {
                let (s, cmp) =
                    customers::suite(&env, quick, c.kannel_best.as_ref(), &c.http_ours).await;
                c.sections.extend(s);
                c.comparisons.extend(cmp);
            }
            _ => operator_suite(&env, &plan, &mut c).await,
        }
        suite_command(&mut c.sections[first..], suite);
    }
    let Collected {
        sections,
        comparisons,
        ..
    } = c;

    let report = Report {
        date: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        command: if quick {
            format!("{command} (--quick: fewer runs, smaller loads)")
        } else {
            command
        },
        versions,
        machine: machine(),
        comparisons,
        sections,
        notes: notes(),
    };
    let md = render(&report);
    print!("{md}");
    let path = if out.is_absolute() {
        out
    } else {
        repo_root().join(out)
    };
    std::fs::write(&path, &md).with_context(|| format!("writing {}", path.display()))?;
    log(&format!("wrote {}", path.display()));
    let missing: Vec<&str> = report
        .sections
        .iter()
        .filter(|s| s.not_measured.is_some())
        .map(|s| s.title.as_str())
        .collect();
    if !missing.is_empty() {
        anyhow::bail!("not measured (the report says why): {}", missing.join("; "));
    }
    Ok(())
}

/// Says under each section how to rerun its suite alone.
fn suite_command(sections: &mut [Section], suite: &str) {
    for s in sections {
        s.notes.push(format!(
            "Rerun this suite alone: `BENCH_ARGS=\"--only {suite}\" make bench`."
        ));
    }
}

fn notes() -> Vec<String> {
    [
        "Run: `make bench` (e2e/bench/run.sh: installs Kannel when missing, builds release binaries, uses the \
         environment of `make env-up` or starts and stops one, then runs `smpp-bench run`). \
         `BENCH_ARGS=\"--only gateway,kannel\"` picks suites; `BENCH_ARGS=--quick` is a smoke test with small \
         loads whose figures are not comparable. Process logs: target/bench-logs/.",
        "The sink is e2e/src/sink/mod.rs on the smpp34 server: it accepts any credentials, answers submit_sm and \
         records every established bind (credentials, port, time of bind_resp). It works around a bug in \
         smpp34 1.5.1, which drops the unbind_resp it owes (Kannel then waits 30 s to stop); e2e/tests/sink.rs \
         checks the workaround.",
        "The message suite uses the messaging sink instead (e2e/src/sink/receipts.rs `ReceiptSink`: raw SMPP 3.4, \
         pipelined, a receipt after a fixed delay; its own ceiling is measured first) and this process's HTTP \
         load generator (e2e/src/bin/smpp-bench/load.rs) for both the gateway and Kannel.",
        "CPU figures come from the scheduler's per-thread accounting (/proc/<pid>/task/*/schedstat, ns), not \
         the 100 Hz tick-sampled utime/stime, which reads 0 for a process whose work is short wake-ups.",
        "Latencies are wall-clock times in this one process (the driver holds the sink), so no clock skew is \
         involved. Figures that involve kubectl include kubectl's own start-up (~150 ms here).",
        "The gateway and operator run with default settings. The operator refreshes status on its resync \
         period (5 s by default), so the first apply → BOUND of a run can take one period.",
        "Profile, memory per idle plain bind (heaptrack and VmRSS at 0 and 1,000 binds, release build): \
         ~19 KB of RSS per bind beyond a ~14 MiB base (most of the base is the binary's mapped code), of \
         which ~15 KB is live heap and the rest allocator overhead. The heap of one vendor with one bind: its \
         four tasks (supervisor, slot worker, session control, session writer; ~5-6 KB of task cells, \
         each future kept small by boxing the steps that talk to PostgreSQL, dial or unbind, checked by \
         unit tests), the session's channels, window, bucket and framed connection (~2 KB: read buffer 16 \
         B and write buffer 0 B while idle, grown to 8 KiB chunks under traffic and shrunk back by the next \
         keep-alive), the configuration held by the watcher, supervisor and registry (~2 KB), its metric \
         series (~0.7 KB) and slot bookkeeping (~1.5 KB). Before this, a bind took ~84 KB: a supervisor \
         future that inlined its sqlx calls (18.5 KB), channels whose first block of 32 slots held inline \
         PDUs and configs (28 KB), tokio-util's 8 KiB read and write buffers (16 KB). TLS binds add \
         rustls' connection state and its buffers; they are not in these figures.",
        "Profile, time to the first binds (sqlx debug log with timestamps, 50 vendors): process start and \
         runtime ~4 ms; the first PostgreSQL connection ~7-10 ms (TCP, a backend fork, SCRAM-SHA-256, which \
         costs CPU on both sides: every new pool connection on the start path costs as much); migrations \
         check ~2-5 ms, with the LISTEN connection opened meanwhile; the first read of the vendor table \
         ~3 ms; then the slot claims, batched across vendors (two statements for all vendors instead of \
         four round trips each through the 8-connection pool); then TCP connect and bind, at most 64 at once \
         per SMSC address (an unpaced burst of 1,000 overflowed the sink's accept queue and the dropped SYNs \
         came back after TCP's 1 s).",
        "Profile, idle CPU at 1,000 binds (perf, 999 Hz for 20 s, release build, 1,000 vendors bound to \
         the simulator of `make env-up`, Redis on): no hot spot; the cost is wake-ups, about 100 a second. \
         Each bind sends enquire_link every 30 s (the default enquire_link_interval_seconds: ~33 a second \
         at 1,000 binds), each vendor's supervisor looked at its budget every 15 s plus jitter (~67 a \
         second, in memory while at its share; now every 60 s and when a worker ends, ~17 a second: \
         idle CPU of a debug build at 1,000 binds 1.40 → 1.14 % of a core, median of 3 runs each), the \
         slot heartbeat runs every 3 s and the resync diffs the \
         1,000 rows every 30 s. A quarter of the samples are the kernel switching tasks and 7 % tokio's \
         timer wheel; the rest is spread thin (PDU decode, metrics, the diff, sqlx). In the 10 s right \
         after binding, when no keep-alive is due, Kannel's bearerbox does nothing while the gateway's \
         heartbeat, budget checks and resync still run, so there Kannel idles lower; over 40 s, which holds \
         one enquire_link per bind on both sides, the gateway uses less (the comparison table).",
        "Profile, operator at 1,000 SmppVendors (the operator suite above; CPU from schedstat, and top every \
         2 s): the apiserver sets the pace. Per vendor the operator makes three writes (the finalizer, the \
         status through server-side apply, a `Created` Event) and one Secret read. On a backlog of 1,000 the \
         test apiserver used ~16 s of CPU (~1.4 of the 2 cores throughout, ~5 ms per write on average) \
         against the operator's ~2.5 s; the same apiserver stores the 2,000 objects of the backlog in ~3.3 s \
         (~2.3 ms of CPU each). Memory: 44.6 MiB at this scale before, with unbounded reconciles (1,000 at \
         once on a backlog, each with its own apiserver connection, all waiting on 8 pooled database \
         connections: 77 MiB peak) and whole objects in the caches. Now at most 16 reconciles run at once per \
         kind (`--reconcile-concurrency`), and managedFields and kubectl's last-applied annotation (which for \
         a Secret applied with kubectl holds its values) are dropped before an object enters a cache: 24-28 \
         MiB.",
        "Profile, CPU per message against the goal of 10× Kannel (the rows \"CPU per message\" of the message \
         suite; `--quick --only messages` of this code, one run per shape: Redis ~32-42 µs, the gateway ~88 µs, the load generator \
         and sink ~23-27 µs, at 11.8-12.8k msg/s against a ceiling of 13.1-13.5k msg/s that those costs leave \
         on 2 cores): the machine is saturated, and the gateway is ~60 % of it. 10× Kannel's same-run rate \
         needs all three to fit in about a third of what they take now; the Redis work alone (the message \
         record, its receipt mapping and state changes, ~10 commands with those inside Lua) is already over \
         a third of that budget.",
        "Profile, time per message on the HTTP path (perf, 499 Hz, both gateway processes of `--only messages \
         --quick`): kernel 30 % (the syscalls of the HTTP request, the Redis round trips and the SMPP \
         writes and reads, loopback TCP), glibc malloc/free/memcpy 27 %, tokio 9 %, formatting, ids and \
         hashing 7 %, the Redis client 7 %, the HTTP server 5 %, our messaging and API code 4 %, JSON 2 %, \
         SMPP encoding and the session 2 %. The SMPP session layer alone (the session suite) spends most of \
         its time in syscalls and task hand-offs: each message crosses three tasks (the caller, the \
         control task, the writer) and, unlike the pipelined raw client, a window is not written in one \
         syscall unless the writer finds it queued (it yields once per batch so that it does).",
    ]
    .map(String::from)
    .to_vec()
}

fn first_line(cmd: &mut Command) -> String {
    cmd.output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The version of every part the figures depend on.
async fn versions(env: &Env) -> Vec<(String, String)> {
    let root = repo_root();
    let rev =
        first_line(
            Command::new("git")
                .arg("-C")
                .arg(&root)
                .args(["rev-parse", "--short", "HEAD"]),
        );
    let dirty = Command::new("git")
        .arg("-C")
        .arg(&root)
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false);
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).unwrap_or_default();
    let pg = match env.pg_pool().await {
        Ok(p) => sqlx::query_scalar::<_, String>("SHOW server_version")
            .fetch_one(&p)
            .await
            .unwrap_or_else(|_| "unknown".into()),
        Err(_) => "unknown".into(),
    };
    let kube = kube_server_version(env);
    vec![
        (
            "smpp-gateway / smpp-operator (git rev)".into(),
            format!(
                "{rev}{}",
                if dirty {
                    " (with uncommitted changes)"
                } else {
                    ""
                }
            ),
        ),
        ("build of the binaries measured".into(), build_profile()),
        (
            "rustc".into(),
            first_line(Command::new("rustc").arg("--version")),
        ),
        (
            "Kannel (peer)".into(),
            format!("bearerbox {} (Debian package kannel)", kannel::version()),
        ),
        (
            "sink".into(),
            format!(
                "smpp34 {} server, in-process (e2e/src/sink/mod.rs)",
                locked_version(&lock, "smpp34")
            ),
        ),
        ("PostgreSQL".into(), pg),
        ("kube-apiserver".into(), kube),
    ]
}

/// The cargo profile of this binary's directory, which is where the measured binaries come from.
fn build_profile() -> String {
    let exe = std::env::current_exe().unwrap_or_default();
    match exe
        .parent()
        .and_then(|d| d.file_name())
        .and_then(|n| n.to_str())
    {
        Some("release") => "release (cargo build --release)".into(),
        Some(other) => format!("{other} profile (NOT release: figures are slower than production)"),
        None => "unknown".into(),
    }
}

fn kube_server_version(env: &Env) -> String {
    let out = env.kubectl().args(["version", "-o", "json"]).output();
    out.ok()
        .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
        .and_then(|v| v["serverVersion"]["gitVersion"].as_str().map(String::from))
        .unwrap_or_else(|| "unknown".into())
}

/// The version Cargo.lock pins for `name`.
fn locked_version(lock: &str, name: &str) -> String {
    let needle = format!("name = \"{name}\"\nversion = \"");
    lock.find(&needle)
        .and_then(|i| lock[i + needle.len()..].split('"').next())
        .unwrap_or("unknown")
        .to_string()
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    format!(
        "{cores} cores ({cpu}), shared with other work, so compare within one run (the Kannel ratio), not across runs"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locked_version_reads_cargo_lock() {
        let lock = "[[package]]\nname = \"smpp34\"\nversion = \"1.5.1\"\nsource = \"x\"\n";
        assert_eq!(locked_version(lock, "smpp34"), "1.5.1");
        assert_eq!(locked_version(lock, "nope"), "unknown");
    }
}
