//! `nodeapp check` against this host: what the generator cannot look up at early boot is
//! checked here, and one bad config does not hide the verdict on the others. No root needed.

mod support;

use std::process::Command;
use support::*;

#[test]
fn a_user_that_does_not_exist_is_named_and_the_other_configs_still_pass() {
    let dir = tempfile::tempdir().unwrap();
    let good = app_config(dir.path(), "good", &["127.0.0.1:1".into()], "");
    let ghost = app_config(
        dir.path(),
        "ghost",
        &["127.0.0.1:2".into()],
        "user = \"no-such-user-7f3a\"",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_nodeapp"))
        .arg("check")
        .arg(&good)
        .arg(&ghost)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stdout}{stderr}");
    assert!(stdout.contains("good.toml: ok (good)"), "{stdout}");
    assert!(
        stderr.contains(&format!(
            "{}: `user`: \"no-such-user-7f3a\" does not exist on this system",
            ghost.display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("1 of 2 configs invalid"), "{stderr}");
}

#[test]
fn memory_limits_that_work_against_each_other_pass_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let tight = app_config(
        dir.path(),
        "tight",
        &["127.0.0.1:1".into()],
        "instances = 2\nmax_memory = \"512M\"\nmemory_max = \"1G\"",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_nodeapp"))
        .arg("check")
        .arg(&tight)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: ")
            && stderr.contains("`memory_max` (1G) is less than max_memory (512M) × 2 workers"),
        "{stderr}"
    );
}
