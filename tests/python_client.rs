//! The Python client (`clients/python/credstore.py`) against the binary cargo built: runs
//! its own test suite, `python3 -m unittest -v clients/python/test_credstore.py`, with
//! `CREDSTORE_BIN` naming this build's `credstore`. That suite starts `credstore serve`
//! itself and calls every route the client has (see its module docs).
//!
//! Needs `python3` (`scripts/install-test-deps.sh` installs it): without it this test
//! prints `SKIPPED` and passes, except under `CI=true`, where it fails. The suite must run
//! every one of its tests: a skip fails this test, in CI or not.

use std::path::Path;
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_credstore");

#[test]
fn the_python_client_passes_its_tests_against_the_real_sidecar() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let found = Command::new("python3")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|out| out.status.success());
    if !found {
        let why = "python3 is not installed (run scripts/install-test-deps.sh)";
        let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
        assert!(!in_ci, "{why}: the Python client's test needs it under CI");
        eprintln!("SKIPPED: {why}");
        return;
    }
    let mut python = Command::new("python3");
    python
        .args(["-m", "unittest", "-v", "clients/python/test_credstore.py"])
        .current_dir(root)
        .env("CREDSTORE_BIN", BIN)
        // No __pycache__ left in the source tree by a test run.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("CREDSTORE_") && name != "CREDSTORE_BIN" {
            python.env_remove(name);
        }
    }
    let out = python.output().expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // unittest reports on stderr; shown whether the test passes or fails.
    println!("{stdout}{stderr}");
    assert!(
        out.status.success(),
        "the Python client's tests failed ({})",
        out.status
    );
    let ran = stderr
        .lines()
        .find_map(|l| l.strip_prefix("Ran ")?.split_whitespace().next()?.parse::<u32>().ok())
        .expect("unittest's `Ran N tests` line");
    assert!(ran > 0, "unittest ran no test");
    assert!(
        !stderr.contains("skipped="),
        "every test of the Python client must run, none skipped"
    );
}
