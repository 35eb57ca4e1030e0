//! `wheelgate origin list`: the package groups as a tree, each indented under its parent (the
//! group INHERIT looks to), with what each restriction comes to and where it comes from.

use std::fmt::Write as _;

use super::groups::PackageGroups;

/// The text of `origin list`: one block per group, depth first from the root `/*`, each group's
/// header indented two spaces per level and its details four more. Ends with a newline.
pub fn list(groups: &PackageGroups) -> String {
    let mut out = String::new();
    for node in groups.tree() {
        let indent = "  ".repeat(node.depth);
        let config = node.config;
        let place = match config.line {
            Some(line) => format!("line {line}"),
            None => "not in the file: allows every origin".to_owned(),
        };
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "{indent}{}  (mode {}, {place})",
            node.pattern, config.mode
        );
        if let Some(description) = &config.description {
            let _ = writeln!(out, "{indent}    description: {description}");
        }
        if let Some(contact) = &config.contact {
            let _ = writeln!(out, "{indent}    contact: {contact}");
        }
        for (restriction, effective, mode, inherited) in node.restrictions {
            let _ = write!(
                out,
                "{indent}    {}: {effective}, {mode}",
                restriction.key()
            );
            match inherited {
                Some(from) => {
                    let _ = writeln!(out, ", inherited from {from}");
                }
                None => out.push('\n'),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Mode, RepoName};
    use crate::origin::{PackageGroupConfig, Pattern, Setting};

    #[test]
    fn groups_print_as_an_indented_tree() {
        let groups = PackageGroups::build(vec![PackageGroupConfig {
            pattern: Pattern::parse("/pypi//acme~").unwrap(),
            description: Some("Internal packages".to_owned()),
            contact: Some("platform@example.invalid".to_owned()),
            publish: Setting::AllowSpecificRepositories(vec![RepoName::parse("internal").unwrap()]),
            external_upstream: Setting::Block,
            internal_upstream: Setting::Inherit,
            mode: Mode::Audit,
            line: Some(7),
        }]);
        assert_eq!(
            list(&groups),
            "/*  (mode enforce, not in the file: allows every origin)\n\
             \x20   publish: ALLOW, enforce\n\
             \x20   external_upstream: ALLOW, enforce\n\
             \x20   internal_upstream: ALLOW, enforce\n\
             \x20 /pypi//acme~  (mode audit, line 7)\n\
             \x20     description: Internal packages\n\
             \x20     contact: platform@example.invalid\n\
             \x20     publish: ALLOW_SPECIFIC_REPOSITORIES [internal], audit\n\
             \x20     external_upstream: BLOCK, audit\n\
             \x20     internal_upstream: ALLOW, enforce, inherited from /*\n"
        );
    }
}
