//! scripts/demo, run on a copy of the repository layout (scripts/demo,
//! fixtures/demo, the real init and initctl in target/debug, a no-op
//! `cargo` first on PATH): it prints init's real exit status and fails
//! when init fails.
mod common;
use common::*;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// A copy of the demo's layout under `dir`; `init_yaml_edit` changes its
/// init.yaml text.
fn demo_tree(dir: &Path, init_yaml_edit: impl Fn(String) -> String) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let root = dir.join("repo");
    copy_dir(&repo.join("scripts"), &root.join("scripts"));
    copy_dir(&repo.join("fixtures/demo"), &root.join("fixtures/demo"));
    let yaml = root.join("fixtures/demo/init.yaml");
    let text = std::fs::read_to_string(&yaml).unwrap();
    std::fs::write(&yaml, init_yaml_edit(text)).unwrap();
    let bin = root.join("target/debug");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(init_bin(), bin.join("init")).unwrap();
    std::os::unix::fs::symlink(initctl_bin(), bin.join("initctl")).unwrap();
    let fake = dir.join("fakebin");
    std::fs::create_dir_all(&fake).unwrap();
    std::fs::write(fake.join("cargo"), "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(fake.join("cargo"), std::fs::Permissions::from_mode(0o755)).unwrap();
    root
}

/// Run `<root>/scripts/demo`: its exit code and stdout.
fn run_demo(dir: &Path, root: &Path) -> (Option<i32>, String) {
    let out_path = dir.join("demo.out");
    let out = std::fs::File::create(&out_path).unwrap();
    let path = format!(
        "{}:{}",
        dir.join("fakebin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut child = Command::new("bash")
        .arg(root.join("scripts/demo"))
        .env("PATH", path)
        .env_remove("INIT_CONFIG")
        .env_remove("INIT_SOCKET")
        .env_remove("INITCTL_CONFIG")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .process_group(0)
        .spawn()
        .unwrap();
    let mut code = None;
    let done = wait_for(
        || match child.try_wait() {
            Ok(Some(st)) => {
                code = st.code();
                true
            }
            _ => false,
        },
        Duration::from_secs(120),
    );
    if !done {
        kill(-(child.id() as i32), 9);
        let _ = child.wait();
    }
    let text = std::fs::read_to_string(&out_path).unwrap_or_default();
    assert!(done, "scripts/demo did not finish:\n{text}");
    (code, text)
}

#[test]
fn demo_reports_init_exit_status() {
    assert!(
        initctl_bin().exists(),
        "{} is not built: run the workspace's tests (scripts/test, or cargo test --workspace)",
        initctl_bin().display()
    );
    // A clean run: status 0.
    let dir = TempDir::new("demo-ok");
    let root = demo_tree(dir.path(), |t| t);
    let (code, text) = run_demo(dir.path(), &root);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("init exited with status 0."), "{text}");

    // init fails: its control socket is another process's live one, so it
    // exits 1 at once. The demo says so, shows its output, and fails.
    let dir = TempDir::new("demo-fail");
    let squat = dir.path().join("squat.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&squat).unwrap();
    let root = demo_tree(dir.path(), |t| {
        t.replace(
            "unix_socket_path: target/demo/init.sock",
            &format!("unix_socket_path: {}", squat.display()),
        )
    });
    let (code, text) = run_demo(dir.path(), &root);
    assert!(text.contains("init exited with status 1."), "{text}");
    assert!(
        text.contains("listening on it"),
        "init's output not shown:\n{text}"
    );
    assert!(!matches!(code, Some(0)), "demo exited 0:\n{text}");
}
