//! Builds the test-only components with a nested cargo invocation (see
//! `host-harness/components/build_components.rs`): the misbehaving fixture of the
//! sandbox tests and the example mail server of the composition tests.
//! Their paths reach the tests as `JMAP_WEB_PUSH_GUEST_FIXTURE` and
//! `JMAP_WEB_PUSH_CONSUMER` ([`jmap_web_push_tests::FIXTURE_PATH`],
//! [`jmap_web_push_tests::CONSUMER_PATH`]).

#[path = "../host-harness/components/build_components.rs"]
mod components;

use components::Build;

fn main() {
    let root = components::workspace_root();
    components::rerun_if_changed(
        &root,
        &[
            "host-harness/fixtures/misbehave",
            "tests/consumer/src",
            "tests/consumer/Cargo.toml",
        ],
    );
    components::build_all(
        &root,
        &[Build {
            name: "test-components",
            packages: &[
                ("GUEST_FIXTURE", "jmap-web-push-fixture-misbehave"),
                ("CONSUMER", "jmap-web-push-consumer"),
            ],
            flags: "",
        }],
    );
}
