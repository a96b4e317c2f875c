//! The Argo CD health check for SmppVendor (deploy/argocd/smpp.io/SmppVendor/health.lua),
//! run case by case from its health_test.yaml (Argo CD's own resource_customizations test
//! layout: `tests: [{healthStatus: {status, message}, inputPath: testdata/x.yaml}]`) with a
//! real Lua interpreter from Debian (e2e/scripts/prereqs.sh installs lua5.4 and lua5.1).
//!
//! The harness gives the script what Argo CD gives a custom check from argocd-cm: the global
//! `obj`, the base and table libraries and a "safe" os with only `time` and `date`; no string
//! or math library. Every interpreter found runs every case: lua5.1 matches the dialect of
//! Argo CD's gopher-lua, lua5.4 the current one. The clock (`os.time()`) is fixed at
//! [`NOW`], the instant the testdata timestamps are written against.
//!
//! Run alone: `cargo test -p smpp-e2e --test argocd_health`.

use serde::Deserialize;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// 2026-01-01T00:10:00Z: "now" for every case.
const NOW: i64 = 1_767_226_200;

const INTERPRETERS: &[&str] = &["lua5.4", "lua5.3", "lua5.1"];

/// Runs health.lua (arg 1) on the object in obj.lua (arg 2) at clock arg 3, in Argo CD's
/// sandbox; writes `status NUL message`.
const HARNESS: &str = r#"
local health_path, obj_path, now = arg[1], arg[2], tonumber(arg[3])
local f = assert(io.open(health_path, "rb"))
local src = f:read("*a")
f:close()
local real_time, real_date = os.time, os.date
local env = {}
for _, k in ipairs({"assert", "error", "getmetatable", "ipairs", "next", "pairs", "pcall",
    "print", "rawequal", "rawget", "rawset", "select", "setmetatable", "tonumber",
    "tostring", "type", "unpack", "xpcall", "_VERSION"}) do
  env[k] = _G[k]
end
env.table = table
env.os = {
  date = real_date,
  time = function(t) if t == nil then return now end return real_time(t) end,
}
env._G = env
env.obj = dofile(obj_path)
local chunk, err
if setfenv then
  chunk, err = loadstring(src, "=health.lua")
  if chunk then setfenv(chunk, env) end
else
  chunk, err = load(src, "=health.lua", "t", env)
end
if not chunk then io.stderr:write(err, "\n") os.exit(2) end
local ok, hs = pcall(chunk)
if not ok then io.stderr:write(tostring(hs), "\n") os.exit(3) end
if type(hs) ~= "table" then
  io.stderr:write("health.lua returned a ", type(hs), ", not a table\n")
  os.exit(4)
end
io.write(tostring(hs.status), "\0", tostring(hs.message))
"#;

#[derive(Deserialize)]
struct TestFile {
    tests: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Case {
    health_status: Health,
    input_path: String,
}

#[derive(Deserialize, Debug, PartialEq)]
struct Health {
    status: String,
    message: String,
}

fn check_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/argocd/smpp.io/SmppVendor")
}

/// `v` as a Lua expression, the way Argo CD hands the object to the script (null: absent).
fn lua_literal(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("nil"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => lua_string(s, out),
        Value::Array(items) => {
            out.push('{');
            for item in items.iter().filter(|i| !i.is_null()) {
                lua_literal(item, out);
                out.push_str(", ");
            }
            out.push('}');
        }
        Value::Object(map) => {
            out.push('{');
            for (k, item) in map.iter().filter(|(_, i)| !i.is_null()) {
                out.push('[');
                lua_string(k, out);
                out.push_str("] = ");
                lua_literal(item, out);
                out.push_str(", ");
            }
            out.push('}');
        }
    }
}

fn lua_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\{:03}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn available_interpreters() -> Vec<&'static str> {
    INTERPRETERS
        .iter()
        .copied()
        .filter(|lua| {
            Command::new(lua)
                .arg("-v")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .collect()
}

/// Runs every case of health_test.yaml against `script` with `lua`; the mismatches.
fn run_cases(lua: &str, script: &Path, work: &Path) -> Vec<String> {
    let dir = check_dir();
    let tests: TestFile = serde_yaml::from_str(
        &std::fs::read_to_string(dir.join("health_test.yaml")).expect("health_test.yaml"),
    )
    .expect("health_test.yaml parses");
    let harness = work.join("harness.lua");
    std::fs::write(&harness, HARNESS).unwrap();
    let mut failures = Vec::new();
    for (i, case) in tests.tests.iter().enumerate() {
        let input = std::fs::read_to_string(dir.join(&case.input_path))
            .unwrap_or_else(|e| panic!("{}: {e}", case.input_path));
        let obj: Value = serde_yaml::from_str(&input)
            .unwrap_or_else(|e| panic!("{} is not YAML: {e}", case.input_path));
        let mut literal = String::from("return ");
        lua_literal(&obj, &mut literal);
        let obj_file = work.join(format!("obj-{i}.lua"));
        std::fs::write(&obj_file, literal).unwrap();
        let out = Command::new(lua)
            .arg(&harness)
            .arg(script)
            .arg(&obj_file)
            .arg(NOW.to_string())
            .output()
            .unwrap_or_else(|e| panic!("running {lua}: {e}"));
        if !out.status.success() {
            failures.push(format!(
                "{lua} {}: health.lua failed ({}): {}",
                case.input_path,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
            continue;
        }
        let text = String::from_utf8(out.stdout).expect("UTF-8 output");
        let (status, message) = text.split_once('\0').unwrap_or((&text, ""));
        let got = Health {
            status: status.into(),
            message: message.into(),
        };
        if got != case.health_status {
            failures.push(format!(
                "{lua} {}:\n  want {:?}\n  got  {:?}",
                case.input_path, case.health_status, got
            ));
        }
    }
    failures
}

fn workdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("argocd-health-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn interpreters_or_fail() -> Vec<&'static str> {
    let found = available_interpreters();
    assert!(
        !found.is_empty(),
        "no Lua interpreter ({}) on PATH: run e2e/scripts/prereqs.sh (apt-get install lua5.4 lua5.1)",
        INTERPRETERS.join(", ")
    );
    found
}

#[test]
fn health_lua_passes_every_case_of_health_test_yaml() {
    let work = workdir("cases");
    let script = check_dir().join("health.lua");
    let mut failures = Vec::new();
    for lua in interpreters_or_fail() {
        failures.extend(run_cases(lua, &script, &work));
    }
    let _ = std::fs::remove_dir_all(&work);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The runner catches a wrong health.lua: with Degraded turned into Healthy, or with the
/// bind-failure grace period gone, cases fail.
#[test]
fn a_wrong_health_lua_fails_the_cases() {
    let work = workdir("mutants");
    let src = std::fs::read_to_string(check_dir().join("health.lua")).unwrap();
    let lua = interpreters_or_fail()[0];
    for (from, to) in [
        (r#"hs.status = "Degraded""#, r#"hs.status = "Healthy""#),
        (
            "BIND_FAILED_GRACE_SECONDS = 300",
            "BIND_FAILED_GRACE_SECONDS = 60",
        ),
    ] {
        let mutant = src.replace(from, to);
        assert_ne!(mutant, src, "{from:?} is not in health.lua");
        let path = work.join("mutant.lua");
        std::fs::write(&path, &mutant).unwrap();
        assert!(
            !run_cases(lua, &path, &work).is_empty(),
            "replacing {from:?} with {to:?} broke no case"
        );
    }
    // The sandbox is Argo CD's: a script that reaches for the string library fails.
    let path = work.join("uses-string.lua");
    std::fs::write(&path, format!("local _ = string.format('%d', 1)\n{src}")).unwrap();
    let failures = run_cases(lua, &path, &work);
    assert!(
        !failures.is_empty() && failures.iter().all(|f| f.contains("health.lua failed")),
        "{}",
        failures.join("\n")
    );
    let _ = std::fs::remove_dir_all(&work);
}

/// Every file in testdata/ is a case, and every health status the check can give is tested.
#[test]
fn every_testdata_file_is_a_case() {
    let dir = check_dir();
    let tests: TestFile =
        serde_yaml::from_str(&std::fs::read_to_string(dir.join("health_test.yaml")).unwrap())
            .unwrap();
    let mut used: Vec<String> = tests.tests.iter().map(|c| c.input_path.clone()).collect();
    used.sort();
    let mut files: Vec<String> = std::fs::read_dir(dir.join("testdata"))
        .unwrap()
        .map(|e| format!("testdata/{}", e.unwrap().file_name().to_string_lossy()))
        .collect();
    files.sort();
    assert_eq!(used, files);
    for status in ["Healthy", "Progressing", "Degraded", "Suspended"] {
        assert!(
            tests.tests.iter().any(|c| c.health_status.status == status),
            "no case for {status}"
        );
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// examples/argocd/application.yaml: the CRD in an earlier wave than the chart and the
/// vendors, ServerSideApply everywhere, SkipDryRunOnMissingResource where the CRD comes from
/// another Application, and every path it names exists in this repository.
#[test]
fn example_applications_sync_the_crd_first() {
    let root = repo_root();
    let text = std::fs::read_to_string(root.join("examples/argocd/application.yaml")).unwrap();
    let apps: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).expect("application.yaml parses"))
        .collect();
    let app = |name: &str| {
        apps.iter()
            .find(|a| a["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no Application {name}"))
    };
    let wave = |a: &Value| -> i32 {
        a["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"]
            .as_str()
            .expect("sync-wave")
            .parse()
            .unwrap()
    };
    let options = |a: &Value| -> Vec<String> {
        a["spec"]["syncPolicy"]["syncOptions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|o| o.as_str().unwrap().to_string())
            .collect()
    };
    let (crds, chart, vendors) = (app("smpp-crds"), app("smpp-gateway"), app("smpp-vendors"));
    assert!(wave(crds) < wave(chart) && wave(chart) < wave(vendors));
    for a in &apps {
        assert_eq!(a["kind"], "Application");
        assert!(
            options(a).contains(&"ServerSideApply=true".to_string()),
            "{}",
            a["metadata"]["name"]
        );
    }
    assert!(options(vendors).contains(&"SkipDryRunOnMissingResource=true".to_string()));
    assert_eq!(crds["spec"]["syncPolicy"]["automated"]["prune"], false);

    // The CRD Application holds exactly the CRDs the operator needs, each file one CRD.
    let crd_dir = root.join(crds["spec"]["source"]["path"].as_str().unwrap());
    let include = crds["spec"]["source"]["directory"]["include"]
        .as_str()
        .unwrap();
    let names: Vec<String> = include
        .trim_matches(['{', '}'])
        .split(',')
        .map(|f| {
            let crd: Value =
                serde_yaml::from_str(&std::fs::read_to_string(crd_dir.join(f)).unwrap()).unwrap();
            assert_eq!(crd["kind"], "CustomResourceDefinition", "{f}");
            crd["metadata"]["name"].as_str().unwrap().to_string()
        })
        .collect();
    let wanted: Vec<&str> = smpp_e2e::operator::CRDS.iter().map(|(_, n)| *n).collect();
    assert_eq!(names, wanted);

    // The chart leaves the CRD to smpp-crds; its value files exist.
    let source = &chart["spec"]["source"];
    let chart_dir = root.join(source["path"].as_str().unwrap());
    assert!(chart_dir.join("Chart.yaml").is_file());
    assert_eq!(source["helm"]["valuesObject"]["crds"]["enabled"], false);
    let values: Vec<PathBuf> = source["helm"]["valueFiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| chart_dir.join(v.as_str().unwrap()))
        .collect();
    for v in &values {
        assert!(v.is_file(), "{}", v.display());
    }
    // Rendered as Argo CD would: no CRD. helm is the environment's (e2e/.bin); not finding
    // it is a failure, not a skipped check.
    let mut helm = smpp_e2e::env::Env::load()
        .expect("the environment (make env-up) provides helm")
        .helm();
    helm.args(["template", "smpp"]).arg(&chart_dir);
    for v in &values {
        helm.arg("-f").arg(v);
    }
    helm.args(["--set", "crds.enabled=false"]);
    let out = helm.output().expect("helm runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered = String::from_utf8_lossy(&out.stdout);
    assert!(!rendered.contains("kind: CustomResourceDefinition"));
    assert!(rendered.contains("kind: Deployment"));

    // The vendors' include pattern names files that exist.
    let include = vendors["spec"]["source"]["directory"]["include"]
        .as_str()
        .unwrap();
    let dir = root.join(vendors["spec"]["source"]["path"].as_str().unwrap());
    for f in include.trim_matches(['{', '}']).split(',') {
        assert!(dir.join(f).is_file(), "{f}");
    }

    // docs/argocd.md tells how to add this very file under the right argocd-cm key.
    let doc = std::fs::read_to_string(root.join("docs/argocd.md")).unwrap();
    for needle in [
        "resource.customizations.health.smpp.io_SmppVendor=deploy/argocd/smpp.io/SmppVendor/health.lua",
        "examples/argocd/application.yaml",
    ] {
        assert!(doc.contains(needle), "docs/argocd.md lacks {needle}");
    }
}
