//! Secrets: read without their trailing newline, and never shown.

use super::Edit::Replace;
use super::{edited, parse_toml, valid_toml, SecretDir, CLUSTER_SECRET};
use crate::config::SecretRef;

#[test]
fn a_secret_is_read_without_its_trailing_newline_and_never_shown() {
    let dir = SecretDir::new();
    let secret = SecretRef::File(dir.path().join("token"))
        .load()
        .expect("token file is readable");
    assert_eq!(secret.expose(), "t0ken-value");

    assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
    assert!(!format!("{:#?}", Some(&secret)).contains("t0ken"));

    // A loaded config holds where secrets are, never their values.
    let text = edited(
        &valid_toml(),
        &[Replace(
            CLUSTER_SECRET,
            "secret = { file = \"{dir}/token\" }",
        )],
        dir.path(),
    );
    let config = parse_toml(&text, &[]).expect("config must load");
    assert!(!format!("{config:?}").contains("t0ken"));
}
