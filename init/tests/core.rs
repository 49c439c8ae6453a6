//! Integration tests of init's core through the real binary (not PID 1).
mod common;
use common::*;

#[test]
fn ping_answers() {
    let init = Init::start(&[]);
    assert_eq!(init.request(r#""Ping""#), serde_json::json!("Pong"));
}
