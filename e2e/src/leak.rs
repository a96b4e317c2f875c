//! Secret-leak checks that cannot pass on nothing: a log that is missing or empty, a command
//! whose output could not be read, or an empty list of secrets fails the check instead of
//! proving "no secret in nothing".

/// Panics if `text` (what the check reads, named by `what`) is empty, if `secrets` is empty or
/// holds an empty string, or if any secret occurs in `text`. The message names the line number
/// and which secret, not the secret itself.
pub fn assert_no_secret(what: &str, text: &str, secrets: &[&str]) {
    assert!(
        !secrets.is_empty(),
        "leak check of {what}: no secrets to look for"
    );
    assert!(
        secrets.iter().all(|s| !s.is_empty()),
        "leak check of {what}: an empty secret would match anything"
    );
    assert!(
        !text.trim().is_empty(),
        "leak check of {what}: nothing to check (missing or empty)"
    );
    for (i, s) in secrets.iter().enumerate() {
        if let Some(n) = text.lines().position(|l| l.contains(s)) {
            panic!(
                "secret #{i} of {} found in {what}, line {}",
                secrets.len(),
                n + 1
            );
        }
    }
}

/// Reads a log file for a leak check: a missing file is an error, not an empty log.
pub fn read_log(path: &std::path::Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("leak check: cannot read the log {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "nothing to check")]
    fn empty_text_fails() {
        assert_no_secret("log", " \n", &["pw"]);
    }

    #[test]
    #[should_panic(expected = "no secrets")]
    fn no_secrets_fails() {
        assert_no_secret("log", "text", &[]);
    }

    #[test]
    #[should_panic(expected = "an empty secret")]
    fn empty_secret_fails() {
        assert_no_secret("log", "text", &["pw", ""]);
    }

    #[test]
    #[should_panic(expected = "secret #1 of 2 found in log, line 2")]
    fn a_secret_is_found() {
        assert_no_secret("log", "a\nb hunter2 c\n", &["pw", "hunter2"]);
    }

    #[test]
    fn clean_text_passes() {
        assert_no_secret("log", "a\nb\n", &["pw", "hunter2"]);
    }

    #[test]
    #[should_panic(expected = "cannot read the log")]
    fn missing_log_fails() {
        read_log(std::path::Path::new("/nonexistent/smpp-e2e-leak-test.log"));
    }
}
