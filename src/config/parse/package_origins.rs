//! `[[package_origin]]`: package-level origin overrides (SPEC §6), each checked on its own (the
//! repository exists, the name is normalised, the values are ALLOW or BLOCK) and against the
//! others (one entry per repository and package).

use toml::Spanned;

use super::{Key, Parser};
use crate::config::raw::{Field, RawPackageOrigin};
use crate::config::{ConfigError, PackageOriginConfig, Problem, RepositoryConfig, RepositoryKind};
use crate::origin::record::Allowance;
use crate::simple::ProjectName;

impl Parser<'_> {
    pub(super) fn package_origins(
        &self,
        raws: &[Spanned<RawPackageOrigin>],
        repositories: &[RepositoryConfig],
    ) -> Result<Vec<PackageOriginConfig>, ConfigError> {
        let mut entries: Vec<PackageOriginConfig> = Vec::with_capacity(raws.len());
        for (index, raw) in raws.iter().enumerate() {
            let entry = self.package_origin(index + 1, raw, repositories)?;
            if let Some(first) = entries
                .iter()
                .find(|e| e.repository == entry.repository && e.package == entry.package)
            {
                let section = format!("[[package_origin]] \"{}\"", entry.package);
                return Err(self.invalid(
                    Some(entry.line),
                    Key {
                        section: &section,
                        name: "package",
                    },
                    Problem::DuplicatePackageOrigin {
                        repository: entry.repository.to_string(),
                        package: entry.package.to_string(),
                        first_line: first.line,
                        second_line: entry.line,
                    },
                ));
            }
            entries.push(entry);
        }
        Ok(entries)
    }

    fn package_origin(
        &self,
        number: usize,
        raw: &Spanned<RawPackageOrigin>,
        repositories: &[RepositoryConfig],
    ) -> Result<PackageOriginConfig, ConfigError> {
        let line = self.line_of(raw.span().start);
        let fields = raw.get_ref();
        let unnamed = format!("[[package_origin]] #{number}");
        let missing = |section: &str, name, hint| self.missing_key(line, section, name, hint);

        let package_key = Key {
            section: &unnamed,
            name: "package",
        };
        let package_field = fields.package.as_ref().ok_or_else(|| {
            missing(
                &unnamed,
                "package",
                "name the package the control is for, e.g. package = \"acme-utils\"",
            )
        })?;
        let written = self.text(package_field, package_key)?;
        let package = ProjectName::parse(written.trim())
            .map_err(|error| self.at(package_field, package_key, Problem::ProjectName(error)))?;
        if package.as_str() != written {
            return Err(self.at(
                package_field,
                package_key,
                Problem::NotNormalisedPackage {
                    written,
                    normalised: package.to_string(),
                },
            ));
        }
        let section = format!("[[package_origin]] \"{package}\"");
        let key = |name| Key {
            section: &section,
            name,
        };

        let repository_field = fields.repository.as_ref().ok_or_else(|| {
            missing(
                &section,
                "repository",
                "name the repository the control is for, e.g. repository = \"internal\"",
            )
        })?;
        let defined = self.defined_repository(
            repository_field,
            key("repository"),
            repositories,
            |name, defined| Problem::UnknownOriginRepository { name, defined },
        )?;
        let repository = defined.name.clone();

        let publish = self.allowance(&fields.publish, key("publish"))?;
        let upstream = self.allowance(&fields.upstream, key("upstream"))?;
        if let (Some(field), false) = (
            &fields.publish,
            matches!(defined.kind, RepositoryKind::Hosted),
        ) {
            return Err(self.at(
                field,
                key("publish"),
                Problem::PublishNotHosted {
                    repository: repository.to_string(),
                    kind: defined.kind.type_name(),
                },
            ));
        }
        if publish.is_none() && upstream.is_none() {
            return Err(self.invalid(Some(line), key(""), Problem::EmptyPackageOrigin));
        }
        Ok(PackageOriginConfig {
            repository,
            package,
            publish,
            upstream,
            line,
        })
    }

    fn allowance(&self, field: &Field, key: Key<'_>) -> Result<Option<Allowance>, ConfigError> {
        let Some(field) = field else {
            return Ok(None);
        };
        let text = self.text(field, key)?;
        Allowance::parse(text.trim())
            .map(Some)
            .ok_or_else(|| self.at(field, key, Problem::UnknownAllowance { found: text }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;

    const REPOS: &str = "[server]\ndefault_repository = \"pypi\"\n\n[[repository]]\nname = \"pypi\"\ntype = \"remote\"\nurl = \"https://example.invalid/simple/\"\n\n[[repository]]\nname = \"internal\"\ntype = \"hosted\"\n";

    #[test]
    fn an_entry_is_read_with_its_line() {
        let config = parse_text(&format!(
            "{REPOS}\n[[package_origin]]\nrepository = \"internal\"\npackage = \"acme-utils\"\nupstream = \"BLOCK\"\n"
        ))
        .unwrap();
        let entry = &config.package_origins[0];
        assert_eq!(entry.repository.as_str(), "internal");
        assert_eq!(entry.package.as_str(), "acme-utils");
        assert_eq!(entry.publish, None);
        assert_eq!(
            entry.upstream,
            Some(crate::origin::record::Allowance::Block)
        );
        assert_eq!(entry.line, 13);
    }

    #[test]
    fn errors_name_the_entry_and_its_line() {
        let cases = [
            (
                "repository = \"nope\"\npackage = \"acme\"\nupstream = \"BLOCK\"\n",
                14,
                "no repository is named \"nope\"",
            ),
            (
                "repository = \"internal\"\npackage = \"Acme_Utils\"\nupstream = \"BLOCK\"\n",
                15,
                "write \"acme-utils\"",
            ),
            (
                "repository = \"internal\"\npackage = \"acme\"\nupstream = \"allow\"\n",
                16,
                "\"allow\" is neither",
            ),
            (
                "repository = \"pypi\"\npackage = \"acme\"\npublish = \"ALLOW\"\n",
                16,
                "only applies to hosted repositories",
            ),
            (
                "repository = \"internal\"\npackage = \"acme\"\n",
                13,
                "sets publish, upstream or both",
            ),
        ];
        for (body, line, expected) in cases {
            let error = error_of(&format!("{REPOS}\n[[package_origin]]\n{body}"));
            let message = error.to_string();
            assert_eq!(error.line(), Some(line), "{message}");
            assert!(message.contains(expected), "{message}");
            assert!(message.contains("[[package_origin]]"), "{message}");
        }
    }

    #[test]
    fn a_second_entry_for_the_same_package_is_refused() {
        let entry = "[[package_origin]]\nrepository = \"internal\"\npackage = \"acme\"\nupstream = \"BLOCK\"\n";
        let error = error_of(&format!("{REPOS}\n{entry}\n{entry}"));
        let message = error.to_string();
        assert_eq!(error.line(), Some(18), "{message}");
        assert!(message.contains("at line 13 and at line 18"), "{message}");
    }
}
