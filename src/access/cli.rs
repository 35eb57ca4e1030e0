//! The input side of `wheelgate hash-password`: the password, typed at a terminal without echo or
//! piped in as one line.
//!
//! Kept in the library, apart from `main.rs`, so that the reading rules (one line, the newline
//! stripped, an empty password refused) are unit-tested.

use std::io::{self, BufRead, IsTerminal as _};

/// Why no password was read. Each is a usage error (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum PasswordInputError {
    #[error("the password is empty; type a password, or pipe one line that holds it")]
    Empty,
    #[error("the two passwords typed differ; run the command again")]
    Mismatch,
    #[error("the password is not UTF-8 text")]
    NotText,
    #[error("cannot read the password: {0}")]
    Read(io::Error),
}

/// Reads the password from standard input: at a terminal, prompts on stderr twice with echo off;
/// from a pipe, reads one line.
pub fn read_password() -> Result<String, PasswordInputError> {
    let stdin = io::stdin();
    if stdin.is_terminal() {
        let first = prompt("Password: ")?;
        if first.is_empty() {
            return Err(PasswordInputError::Empty);
        }
        if prompt("Repeat the password: ")? != first {
            return Err(PasswordInputError::Mismatch);
        }
        Ok(first)
    } else {
        read_line(&mut stdin.lock())
    }
}

/// Reads the first line of `input`, without its line ending (`\n` or `\r\n`). Anything after it
/// is left unread; the line itself is taken as it is, spaces included.
pub fn read_line(input: &mut impl BufRead) -> Result<String, PasswordInputError> {
    let mut line = Vec::new();
    input
        .read_until(b'\n', &mut line)
        .map_err(PasswordInputError::Read)?;
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
    let password = String::from_utf8(line).map_err(|_| PasswordInputError::NotText)?;
    if password.is_empty() {
        return Err(PasswordInputError::Empty);
    }
    Ok(password)
}

/// One password from the terminal, echo off, the prompt on stderr.
fn prompt(text: &str) -> Result<String, PasswordInputError> {
    let config = rpassword::ConfigBuilder::new()
        .output_writer(io::stderr())
        .build();
    rpassword::prompt_password_with_config(text, config).map_err(|error| {
        if error.kind() == io::ErrorKind::InvalidData {
            PasswordInputError::NotText
        } else {
            PasswordInputError::Read(error)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(input: &[u8]) -> Result<String, PasswordInputError> {
        read_line(&mut &input[..])
    }

    #[test]
    fn one_line_without_its_ending() {
        assert_eq!(line(b"s3cret\n").unwrap(), "s3cret");
        assert_eq!(line(b"s3cret\r\n").unwrap(), "s3cret");
        assert_eq!(line(b"no newline").unwrap(), "no newline");
        assert_eq!(
            line(b" spaced out \nsecond line\n").unwrap(),
            " spaced out "
        );
    }

    #[test]
    fn empty_or_binary_input_is_refused() {
        assert!(matches!(line(b""), Err(PasswordInputError::Empty)));
        assert!(matches!(line(b"\n"), Err(PasswordInputError::Empty)));
        assert!(matches!(line(b"\r\nx"), Err(PasswordInputError::Empty)));
        assert!(matches!(
            line(b"\xff\xfe\n"),
            Err(PasswordInputError::NotText)
        ));
    }
}
