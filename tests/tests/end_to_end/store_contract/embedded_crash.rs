//! kill -9 of a process writing to the embedded store: every acknowledged
//! write survives.

use super::*;

const CHILD_ENV: &str = "JMAP_WEB_PUSH_CRASH_CHILD_STORE";
const ACKS_BEFORE_KILL: usize = 200;

pub(super) fn crash_value(i: usize) -> Vec<u8> {
    format!("value {i} ").repeat(1 + i % 17).into_bytes()
}

/// The child: writes `crash/NNNNNN` keys one after another and prints
/// `ack N` after each `put` returns, until killed. A no-op unless the parent
/// set the variable.
#[test]
fn embedded_kill9_child_writer() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    use std::io::Write;
    let store = EmbeddedStore::open(&path).expect("child opens the store");
    let mut out = std::io::stdout().lock();
    for i in 0..1_000_000usize {
        store
            .put(&format!("crash/{i:06}"), &crash_value(i), Condition::Any)
            .expect("child put");
        writeln!(out, "ack {i}").unwrap();
        out.flush().unwrap();
    }
}

/// The child test's full name in this binary (`store_contract::...`), for
/// `--exact`.
pub(super) fn child_test_name() -> String {
    let module = module_path!();
    let module = module.split_once("::").map_or(module, |(_, m)| m);
    format!("{module}::embedded_kill9_child_writer")
}

#[test]
fn embedded_kill9_keeps_every_acknowledged_write() {
    let dir = TempDir::new("kill9");
    let path = dir.0.join("store.redb");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            &child_test_name(),
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the child writer");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acked = Vec::new();
    while acked.len() < ACKS_BEFORE_KILL {
        let line = match lines.next() {
            Some(l) => l.unwrap(),
            None => panic!("child ended after {} acks", acked.len()),
        };
        if let Some(n) = line.strip_prefix("ack ") {
            acked.push(n.parse::<usize>().unwrap());
        }
    }
    child.kill().expect("SIGKILL");
    // Acks already written to the pipe count too.
    for line in lines {
        let Ok(line) = line else { break };
        if let Some(n) = line.strip_prefix("ack ") {
            acked.push(n.parse::<usize>().unwrap());
        }
    }
    let status = child.wait().unwrap();
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9), "killed by SIGKILL: {status:?}");
    }
    let store = EmbeddedStore::open(&path).expect("reopens after kill -9");
    let keys: Vec<String> = acked.iter().map(|i| format!("crash/{i:06}")).collect();
    let got = store.get_many(&keys).unwrap();
    for (i, entry) in acked.iter().zip(&got) {
        let entry = entry
            .as_ref()
            .unwrap_or_else(|| panic!("acknowledged write {i} lost"));
        assert_eq!(entry.value, crash_value(*i), "write {i}");
    }
    // The store still works.
    store.put("after", b"crash", Condition::Absent).unwrap();
    eprintln!(
        "kill -9 after {} acknowledged writes: all present",
        acked.len()
    );
}
