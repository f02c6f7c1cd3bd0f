//! The engine examples (crates/iomux-engine/examples) refuse a command line
//! they do not take with their usage, instead of starting anyway.

#[path = "../../iomux/tests/common/run_example.rs"]
mod run_example;

use run_example::refused;

#[test]
fn chat_refuses_extra_arguments_and_loopless_engines() {
    let (status, stderr) = refused("chat", &["epoll-edge", "--port", "7001"]);
    assert!(
        !status.success() && stderr.contains("usage: chat [ENGINE]"),
        "{stderr}"
    );
    let (status, stderr) = refused("chat", &["epol"]);
    assert!(
        !status.success() && stderr.contains(r#"unknown engine "epol": use epoll-edge"#),
        "{stderr}"
    );
    let (status, stderr) = refused("chat", &["threads"]);
    assert!(
        !status.success() && stderr.contains("threads has no loop"),
        "{stderr}"
    );
}

#[test]
fn forward_refuses_extra_arguments() {
    let (status, stderr) = refused("forward", &["127.0.0.1:0", "127.0.0.1:9", "uring", "extra"]);
    assert!(
        !status.success() && stderr.contains("usage: forward LISTEN_ADDR UPSTREAM_ADDR [ENGINE]"),
        "{stderr}"
    );
}
