//! A second third-party JMAP client: npm `jmap-jam` 0.13 (MIT, TypeScript),
//! driven through `scripts/interop/jam-client.mjs`, against `serve`, with
//! the `web-push-testing` emulator as the push service (what a browser
//! would use). The client builds every request (its `using` list, the
//! result reference of `requestMany`) and reads every answer (it throws
//! method errors); the test asserts on what the client saw and on what the
//! push service received.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::Duration;

use serde_json::{json, Value};

use super::{node_modules, repo_root, Emulator, SETUP_HINT};
use jmap_web_push_tests::TestServer;

/// How long one command may take before the test gives up on node.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// The jam bridge script, killed on drop.
struct Jam {
    child: Child,
    stdin: ChildStdin,
    /// The bridge's answer lines, read on a thread of their own so that a
    /// stalled node fails the test after [`ANSWER_TIMEOUT`].
    answers: Receiver<String>,
}

impl Jam {
    fn start(session_url: &str, token: &str) -> Jam {
        let modules = node_modules();
        assert!(
            modules.join("jmap-jam/package.json").exists(),
            "{} has no jmap-jam: {SETUP_HINT}",
            modules.display()
        );
        let mut child = Command::new("node")
            .arg(repo_root().join("scripts/interop/jam-client.mjs"))
            .args([session_url, token])
            .env("INTEROP_NODE_MODULES", &modules)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start node ({e}): {SETUP_HINT}"));
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let (tx, answers) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Jam {
            child,
            stdin,
            answers,
        }
    }

    /// One command; the bridge's answer (`{"ok": ...}` or `{"error": ...}`).
    fn send(&mut self, command: Value) -> Value {
        writeln!(self.stdin, "{command}").expect("write to the jam bridge");
        let line = match self.answers.recv_timeout(ANSWER_TIMEOUT) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => {
                panic!("the jam bridge gave no answer in {ANSWER_TIMEOUT:?} to {command}")
            }
            Err(RecvTimeoutError::Disconnected) => panic!(
                "the jam bridge ended ({:?}) before answering {command}",
                self.child.wait()
            ),
        };
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?} for {command}"))
    }

    /// A command that must succeed; its result.
    fn ok(&mut self, command: Value) -> Value {
        let answer = self.send(command.clone());
        assert!(answer.get("error").is_none(), "{command}: {answer}");
        answer["ok"].clone()
    }

    /// `jam.api.<Entity>.<operation>(args)`: the response arguments and the
    /// response's `sessionState`, as the client returned them.
    fn call(&mut self, method: &str, args: Value) -> (Value, Value) {
        let r = self.ok(json!({"op": "call", "method": method, "args": args}));
        (r["data"].clone(), r["sessionState"].clone())
    }
}

impl Drop for Jam {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn jmap_jam_client_subscribes_verifies_receives_and_destroys_through_serve() {
    let emulator = Emulator::start();
    let server = TestServer::start(Vec::new());
    let mut jam = Jam::start(
        &format!("{}/.well-known/jmap", server.base()),
        TestServer::TOKEN,
    );

    // The Session as the client loaded it, with the bearer token.
    let session = jam.ok(json!({"op": "session"}));
    assert_eq!(session["username"], TestServer::USER, "{session}");
    let key = session["capabilities"]["urn:ietf:params:jmap:webpush-vapid"]["applicationServerKey"]
        .as_str()
        .unwrap_or_else(|| panic!("no VAPID key in {session}"))
        .to_string();
    let state = session["state"].clone();
    assert!(state.is_string(), "{session}");

    // The browser side: a push subscription for the server's VAPID key.
    let (status, r) = emulator.post("/subscribe", &json!({"applicationServerKey": key}));
    assert_eq!(status, 200, "subscribe: {r}");
    let data = &r["data"];
    let hash = data["clientHash"].as_str().expect("clientHash");

    // Create, with the browser's endpoint and keys, for Email only.
    let (created, session_state) = jam.call(
        "PushSubscription/set",
        json!({"create": {"c": {
            "deviceClientId": "jam-browser",
            "url": data["endpoint"],
            "keys": {"p256dh": data["keys"]["p256dh"], "auth": data["keys"]["auth"]},
            "types": ["Email"],
        }}}),
    );
    let id = created["created"]["c"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("not created: {created}"))
        .to_string();
    assert_eq!(session_state, state, "sessionState of the API response");

    // The verification push reached the browser, decrypted by the emulator.
    let messages = emulator.messages(hash);
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0]["@type"], "PushVerification", "{messages:?}");
    assert_eq!(messages[0]["pushSubscriptionId"], id.as_str());
    let code = messages[0]["verificationCode"].clone();

    // A wrong code is a SetError the client hands back, not a throw.
    let (r, _) = jam.call(
        "PushSubscription/set",
        json!({"update": {id.clone(): {"verificationCode": "not-the-code"}}}),
    );
    assert_eq!(r["notUpdated"][&id]["type"], "invalidProperties", "{r}");
    assert_eq!(
        r["notUpdated"][&id]["properties"],
        json!(["verificationCode"])
    );
    let (r, _) = jam.call(
        "PushSubscription/set",
        json!({"update": {id.clone(): {"verificationCode": code}}}),
    );
    assert!(r["updated"].get(&id).is_some(), "verified: {r}");

    let (got, _) = jam.call("PushSubscription/get", json!({"ids": [id.clone()]}));
    let one = &got["list"][0];
    assert_eq!(one["id"], id.as_str(), "{got}");
    assert_eq!(one["deviceClientId"], "jam-browser");
    assert_eq!(one["verificationCode"], code);
    assert_eq!(one["types"], json!(["Email"]));
    // RFC 8620 §7.2: url and keys are never returned.
    assert!(
        one.get("url").is_none() && one.get("keys").is_none(),
        "{got}"
    );

    // A method error is thrown by the client with its type and description.
    let answer = jam.send(json!({"op": "call", "method": "PushSubscription/get",
                                 "args": {"properties": ["color"]}}));
    assert_eq!(answer["error"]["type"], "invalidArguments", "{answer}");
    assert!(
        answer["error"]["description"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "{answer}"
    );

    // A change reaches the browser, filtered to the subscription's types.
    let (status, r) = server.event(
        Some(&format!("Bearer {}", TestServer::ADMIN)),
        &json!({"type": "StateChange", "username": TestServer::USER,
                "changed": {"acc-1": {"Email": "e1", "Mailbox": "m1"}}})
        .to_string(),
    );
    assert_eq!(
        (status, r["results"][0]["delivered"].clone()),
        (200, json!(1)),
        "{r}"
    );
    assert_eq!(
        emulator.messages(hash).last().cloned(),
        Some(json!({"@type": "StateChange", "changed": {"acc-1": {"Email": "e1"}}}))
    );

    // "Forget this device": /get and a /set destroying "#destroy" =
    // /list/*/id, one request built by the client's result references.
    let r = jam.ok(json!({"op": "destroyAll"}));
    assert_eq!(r["all"]["list"], json!([{"id": id.clone()}]), "{r}");
    assert_eq!(r["gone"]["destroyed"], json!([id.clone()]), "{r}");
    let (got, _) = jam.call("PushSubscription/get", json!({"ids": [id.clone()]}));
    assert_eq!(got["notFound"], json!([id]), "{got}");
    assert_eq!(got["list"], json!([]), "{got}");
}
