//! The CEL side of download rules: the environment conditions are compiled against, the values
//! they see for one file, and the load-time check of what they refer to.
//!
//! The `cel` crate's `compile` only parses: a misspelt field (`pkg.nme`) or function would first
//! show up when a file is evaluated, as an evaluation error that fails closed and quietly hides
//! packages. [`check`] walks the parsed expression once at load instead, so such a rule is a
//! configuration error naming the position in the expression.
//!
//! Per request nothing is allocated up front: the `pkg` object is a set of small borrowing values
//! on the stack, handed to a fresh inner scope of the shared base context through a variable
//! resolver, and `pkg.version.upload_time` and `now` are only turned into CEL timestamps when an
//! expression reads them.

use std::any::Any;
use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use cel::common::ast::{Expr, IdedExpr, LiteralValue, SourceInfo};
use cel::common::traits::{Comparer, Indexer};
use cel::common::types::{CelBool, CelString, CelTimestamp, Type, STRING_TYPE};
use cel::common::value::{CowVal, StaticVal, Val};
use cel::context::VariableResolver;
use cel::{Context, DeclarationError, Env, ExecutionError, Program, Value};

use super::version::{Specifiers, Version, VersionError};
use super::FileFacts;

/// The name our `version()` values report as their CEL type, e.g. in "no matching overload for
/// '_<_' applied to '(version, string)'".
static VERSION_TYPE: Type = Type::new_unspecified_type("version");
static PKG_TYPE: Type = Type::new_unspecified_type("wheelgate.Package");
static PKG_VERSION_TYPE: Type = Type::new_unspecified_type("wheelgate.PackageVersion");
static PKG_FILE_TYPE: Type = Type::new_unspecified_type("wheelgate.PackageFile");
static PKG_PROJECT_TYPE: Type = Type::new_unspecified_type("wheelgate.Project");

/// The operators the parser and the standard macros produce as calls. The interpreter evaluates
/// them itself, so they are not declared in the environment and the function check skips them.
const OPERATORS: [&str; 21] = [
    "_?_:_",
    "_&&_",
    "_||_",
    "!_",
    "_-_",
    "_+_",
    "_*_",
    "_/_",
    "_%_",
    "_==_",
    "_!=_",
    "_>=_",
    "_<=_",
    "_>_",
    "_<_",
    "-_",
    "_[_]",
    "_[?_]",
    "_?._",
    "@in",
    "@not_strictly_false",
];

/// The fields of `pkg`, as a tree: each object's path and the names of its fields.
const PKG_FIELDS: [(&str, &[&str]); 4] = [
    ("pkg", &["id", "version", "file", "project"]),
    ("pkg.version", &["id", "upload_time", "yanked"]),
    ("pkg.file", &["name", "kind", "provenance"]),
    ("pkg.project", &["status"]),
];

/// What a leaf of `pkg` is, for a message about selecting a field of it.
fn leaf_type(path: &str) -> &'static str {
    match path {
        "pkg.version.upload_time" => "a timestamp",
        "pkg.version.yanked" | "pkg.file.provenance" => "a bool",
        _ => "a string",
    }
}

/// A position in a condition, 1-based, in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// What is wrong with a condition, found when the configuration loads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConditionError {
    #[error("syntax error at {position}: {message}")]
    Syntax { position: Position, message: String },
    #[error("unknown field `{field}` of `{of}` at {position}; {of} has {}", list(.known))]
    UnknownField {
        of: String,
        field: String,
        known: &'static [&'static str],
        position: Position,
    },
    #[error("`{of}` at {position} has no fields (it is {what}), so `.{field}` cannot be read")]
    NotAnObject {
        of: String,
        field: String,
        what: &'static str,
        position: Position,
    },
    #[error("unknown variable `{name}` at {position}; conditions can read `pkg` (pkg.id, pkg.version.id, pkg.version.upload_time, pkg.version.yanked, pkg.file.name, pkg.file.kind, pkg.file.provenance, pkg.project.status) and `now`")]
    UnknownVariable { name: String, position: Position },
    #[error("unknown function `{name}` at {position}; conditions can call CEL's standard functions, version('1.2') and '1.2'.satisfies('>=1,<2')")]
    UnknownFunction { name: String, position: Position },
    #[error("`{name}` at {position} {usage}")]
    Misused {
        name: &'static str,
        usage: &'static str,
        position: Position,
    },
    #[error("at {position}: {error}")]
    Literal {
        position: Position,
        error: VersionError,
    },
}

fn list(items: &[&str]) -> String {
    items
        .iter()
        .map(|item| format!("`{item}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A `version()` value: a PEP 440 version with PEP 440 ordering.
///
/// It compares only with another `version()`: comparing it with a string is an evaluation error
/// (and so fails closed) rather than a silent string comparison, which would order `9.0` after
/// `10.0`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CelVersion(Version);

impl Val for CelVersion {
    fn get_type(&self) -> &Type {
        &VERSION_TYPE
    }

    fn cel_type() -> &'static Type {
        &VERSION_TYPE
    }

    fn as_comparer(&self) -> Option<&dyn Comparer> {
        Some(self)
    }

    fn equals(&self, other: &dyn Val) -> bool {
        other
            .downcast_ref::<CelVersion>()
            .is_some_and(|other| other.0 == self.0)
    }

    fn clone_as_boxed<'v>(&self) -> Box<dyn Val + 'v> {
        Box::new(self.clone())
    }

    fn as_any(&self) -> Option<&dyn Any> {
        Some(self)
    }
}

impl StaticVal for CelVersion {}

impl Comparer for CelVersion {
    fn compare(&self, rhs: &dyn Val) -> Result<Ordering, ExecutionError> {
        match rhs.downcast_ref::<CelVersion>() {
            Some(rhs) => Ok(self.0.cmp(&rhs.0)),
            // The interpreter rewords this as "no matching overload for '_<_' applied to
            // '(version, string)'", naming both types.
            None => Err(ExecutionError::UnexpectedType {
                got: rhs.get_type().name().to_owned(),
                want: VERSION_TYPE.name().to_owned(),
            }),
        }
    }
}

/// `version(string)`.
fn version_function<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let text = string_argument(&args, 0, "version")?;
    Version::parse(text)
        .map(|version| CowVal::owned(CelVersion(version)))
        .map_err(|error| ExecutionError::function_error("version", error))
}

/// `<string>.satisfies(<specifier set>)`.
fn satisfies_function<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let version = Version::parse(string_argument(&args, 0, "satisfies")?)
        .map_err(|error| ExecutionError::function_error("satisfies", error))?;
    let specifiers = Specifiers::parse(string_argument(&args, 1, "satisfies")?)
        .map_err(|error| ExecutionError::function_error("satisfies", error))?;
    Ok(CowVal::owned(CelBool::from(specifiers.contains(&version))))
}

/// The overloads are declared for strings, so the interpreter only calls them with strings; the
/// check keeps a future change of declaration from turning into a panic.
fn string_argument<'a>(
    args: &'a [CowVal<'_, '_>],
    index: usize,
    function: &str,
) -> Result<&'a str, ExecutionError> {
    args.get(index)
        .and_then(|arg| arg.downcast_ref::<CelString>())
        .map(CelString::inner)
        .ok_or_else(|| ExecutionError::function_error(function, "expects string arguments"))
}

/// Why the environment could not be built: only a change of the `cel` crate's standard library
/// (a name we declare becoming one of its own) can cause it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("cannot declare wheelgate's CEL functions: {0}")]
pub struct EnvironmentError(DeclarationError);

/// CEL's standard environment with `version()` and `.satisfies()`; built once per policy.
pub(crate) fn environment() -> Result<Arc<Env>, EnvironmentError> {
    let mut env = Env::stdlib();
    env.add_overload(
        "version",
        "version_string",
        vec![STRING_TYPE],
        version_function,
    )
    .map_err(EnvironmentError)?;
    env.add_member_overload(
        "satisfies",
        "string_satisfies_string",
        STRING_TYPE,
        vec![STRING_TYPE],
        satisfies_function,
    )
    .map_err(EnvironmentError)?;
    Ok(Arc::new(env))
}

/// Whether `name` is a function the environment declares.
///
/// `cel` offers no direct query, but documents that adding a context function whose name the
/// environment already declares (globally or as a member) fails with `OverloadConflict`; that is
/// the question asked here, on a throw-away context, once per name at load.
fn is_declared(env: &Arc<Env>, name: &str) -> bool {
    let mut probe = Context::with_env(Arc::clone(env));
    matches!(
        probe.add_function(name, || true),
        Err(DeclarationError::OverloadConflict { .. })
    )
}

/// What a checked condition reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Usage {
    pub reads_now: bool,
}

/// Parses `source` and checks every variable, field and function it names, and the literal
/// arguments of `version()` and `.satisfies()`.
pub(crate) fn compile(env: &Arc<Env>, source: &str) -> Result<(Program, Usage), ConditionError> {
    let program = env.compile(source).map_err(|errors| {
        let first = errors.errors.first();
        let (line, column) = first.map_or((1, 1), |error| error.pos);
        ConditionError::Syntax {
            position: Position {
                line: usize::try_from(line).unwrap_or(1).max(1),
                column: usize::try_from(column).unwrap_or(1).max(1),
            },
            message: first
                .map(|error| error.msg.split_whitespace().collect::<Vec<_>>().join(" "))
                .unwrap_or_else(|| "the expression could not be parsed".to_owned()),
        }
    })?;
    let mut checker = Checker {
        env,
        source,
        source_info: program.source_info(),
        bound: Vec::new(),
        usage: Usage::default(),
    };
    checker.expr(program.expression())?;
    let usage = checker.usage;
    Ok((program, usage))
}

struct Checker<'a> {
    env: &'a Arc<Env>,
    source: &'a str,
    source_info: &'a SourceInfo,
    /// Comprehension variables in scope (`x` in `[...].exists(x, ...)`).
    bound: Vec<&'a str>,
    usage: Usage,
}

impl<'a> Checker<'a> {
    fn position(&self, node: &IdedExpr) -> Position {
        let offset = self
            .source_info
            .offset_for(node.id)
            .map_or(0, |(start, _)| start as usize);
        let mut position = Position { line: 1, column: 1 };
        for ch in self.source.chars().take(offset) {
            if ch == '\n' {
                position.line += 1;
                position.column = 1;
            } else {
                position.column += 1;
            }
        }
        position
    }

    fn expr(&mut self, node: &'a IdedExpr) -> Result<(), ConditionError> {
        match &node.expr {
            Expr::Ident(name) => self.path(node, name, &[]),
            Expr::Select(select) => {
                // A chain of selections on a name (`pkg.version.id`, `has(pkg.version.id)`)
                // is checked as one path; a selection on anything else checks its operand.
                let mut fields = vec![(node, select.field.as_str())];
                let mut operand: &IdedExpr = &select.operand;
                loop {
                    match &operand.expr {
                        Expr::Select(inner) if !inner.test => {
                            fields.push((operand, inner.field.as_str()));
                            operand = &inner.operand;
                        }
                        Expr::Ident(root) => {
                            fields.reverse();
                            return self.path(operand, root, &fields);
                        }
                        _ => return self.expr(&select.operand),
                    }
                }
            }
            Expr::Call(call) => {
                self.call(node, &call.func_name, call.target.as_deref(), &call.args)?;
                if let Some(target) = &call.target {
                    self.expr(target)?;
                }
                call.args.iter().try_for_each(|arg| self.expr(arg))
            }
            Expr::Comprehension(comprehension) => {
                self.expr(&comprehension.iter_range)?;
                self.expr(&comprehension.accu_init)?;
                let outer = self.bound.len();
                self.bound.push(&comprehension.iter_var);
                if let Some(second) = &comprehension.iter_var2 {
                    self.bound.push(second);
                }
                self.bound.push(&comprehension.accu_var);
                let inner = [
                    &comprehension.loop_cond,
                    &comprehension.loop_step,
                    &comprehension.result,
                ]
                .into_iter()
                .try_for_each(|part| self.expr(part));
                self.bound.truncate(outer);
                inner
            }
            Expr::List(list) => list
                .elements
                .iter()
                .try_for_each(|element| self.expr(element)),
            Expr::Map(map) => map.entries.iter().try_for_each(|entry| match &entry.expr {
                cel::common::ast::EntryExpr::MapEntry(entry) => {
                    self.expr(&entry.key)?;
                    self.expr(&entry.value)
                }
                cel::common::ast::EntryExpr::StructField(field) => self.expr(&field.value),
            }),
            Expr::Struct(structure) => structure.entries.iter().try_for_each(|entry| match &entry
                .expr
            {
                cel::common::ast::EntryExpr::MapEntry(entry) => {
                    self.expr(&entry.key)?;
                    self.expr(&entry.value)
                }
                cel::common::ast::EntryExpr::StructField(field) => self.expr(&field.value),
            }),
            Expr::Literal(_) | Expr::Unspecified => Ok(()),
        }
    }

    /// A name with the fields selected on it, each with the node that selects it: `pkg` with
    /// `version` and `id`. Errors point at the root's node or at the selection at fault.
    fn path(
        &mut self,
        root_node: &IdedExpr,
        root: &str,
        fields: &[(&IdedExpr, &str)],
    ) -> Result<(), ConditionError> {
        if self.bound.contains(&root) {
            return Ok(());
        }
        match root {
            "pkg" => {
                let mut of = "pkg".to_owned();
                for (node, field) in fields {
                    let Some((_, known)) = PKG_FIELDS.iter().find(|(path, _)| *path == of) else {
                        return Err(ConditionError::NotAnObject {
                            what: leaf_type(&of),
                            of,
                            field: (*field).to_owned(),
                            position: self.position(node),
                        });
                    };
                    if !known.contains(field) {
                        return Err(ConditionError::UnknownField {
                            of,
                            field: (*field).to_owned(),
                            known,
                            position: self.position(node),
                        });
                    }
                    of = format!("{of}.{field}");
                }
                Ok(())
            }
            "now" => {
                self.usage.reads_now = true;
                match fields.first() {
                    None => Ok(()),
                    Some((node, field)) => Err(ConditionError::NotAnObject {
                        of: "now".to_owned(),
                        field: (*field).to_owned(),
                        what: "a timestamp",
                        position: self.position(node),
                    }),
                }
            }
            // Type names (`int`, `string`, `google.protobuf.Timestamp`) are values too, as in
            // `type(x) == string`.
            _ if self.env.types().find_type(&dotted(root, fields)).is_some() => Ok(()),
            _ => Err(ConditionError::UnknownVariable {
                name: root.to_owned(),
                position: self.position(root_node),
            }),
        }
    }

    fn call(
        &mut self,
        node: &IdedExpr,
        name: &str,
        target: Option<&IdedExpr>,
        args: &[IdedExpr],
    ) -> Result<(), ConditionError> {
        let literal = |node: Option<&IdedExpr>| match node.map(|node| &node.expr) {
            Some(Expr::Literal(LiteralValue::String(text))) => Some(text.inner().to_owned()),
            _ => None,
        };
        match name {
            "version" => {
                if target.is_some() || args.len() != 1 {
                    return Err(ConditionError::Misused {
                        name: "version",
                        usage:
                            "takes one string and is called as a function: version(pkg.version.id)",
                        position: self.position(node),
                    });
                }
                if let Some(text) = literal(args.first()) {
                    Version::parse(&text).map_err(|error| ConditionError::Literal {
                        position: self.position(node),
                        error,
                    })?;
                }
                Ok(())
            }
            "satisfies" => {
                if target.is_none() || args.len() != 1 {
                    return Err(ConditionError::Misused {
                        name: "satisfies",
                        usage: "is called on a version string with one specifier set: pkg.version.id.satisfies('>=1.2,<2')",
                        position: self.position(node),
                    });
                }
                if let Some(text) = literal(target) {
                    Version::parse(&text).map_err(|error| ConditionError::Literal {
                        position: self.position(node),
                        error,
                    })?;
                }
                if let Some(text) = literal(args.first()) {
                    Specifiers::parse(&text).map_err(|error| ConditionError::Literal {
                        position: self.position(node),
                        error,
                    })?;
                }
                Ok(())
            }
            _ if OPERATORS.contains(&name) || is_declared(self.env, name) => Ok(()),
            _ => Err(ConditionError::UnknownFunction {
                name: name.to_owned(),
                position: self.position(node),
            }),
        }
    }
}

fn dotted(root: &str, fields: &[(&IdedExpr, &str)]) -> String {
    let mut name = root.to_owned();
    for (_, field) in fields {
        name.push('.');
        name.push_str(field);
    }
    name
}

/// `pkg`: borrows the file's facts; every field but the upload time is ready to hand out.
#[derive(Debug, Clone)]
struct PkgVal<'a> {
    id: CelString<'a>,
    version: PkgVersionVal<'a>,
    file: PkgFileVal<'a>,
    project: PkgProjectVal<'a>,
}

/// `pkg.version`.
#[derive(Debug, Clone)]
struct PkgVersionVal<'a> {
    id: Option<CelString<'a>>,
    /// Parsed only when a condition reads it.
    upload_time: Option<&'a str>,
    yanked: CelBool,
}

/// `pkg.file`.
#[derive(Debug, Clone)]
struct PkgFileVal<'a> {
    name: CelString<'a>,
    kind: CelString<'static>,
    provenance: CelBool,
}

/// `pkg.project`.
#[derive(Debug, Clone)]
struct PkgProjectVal<'a> {
    status: CelString<'a>,
}

/// The field name of `x.f` or `x['f']`.
fn field_name(field: &dyn Val) -> Result<&str, ExecutionError> {
    field
        .downcast_ref::<CelString>()
        .map(CelString::inner)
        .ok_or_else(|| ExecutionError::UnexpectedType {
            got: field.get_type().name().to_owned(),
            want: STRING_TYPE.name().to_owned(),
        })
}

/// `NoSuchKey` is what `has()` reads as "absent", so `has(pkg.version.upload_time)` is false for a
/// file without one; any other read of it is an evaluation error.
fn absent(what: &str) -> ExecutionError {
    ExecutionError::no_such_key(what)
}

macro_rules! object_val {
    ($ty:ident, $cel_type:ident) => {
        impl<'a> Val for $ty<'a> {
            fn get_type(&self) -> &Type {
                &$cel_type
            }

            fn cel_type() -> &'static Type {
                &$cel_type
            }

            fn as_indexer<'b, 'v>(&'b self) -> Option<&'b (dyn Indexer + 'v)>
            where
                Self: 'v,
            {
                Some(self)
            }

            fn clone_as_boxed<'v>(&self) -> Box<dyn Val + 'v>
            where
                Self: 'v,
            {
                Box::new(self.clone())
            }
        }
    };
}

object_val!(PkgVal, PKG_TYPE);
object_val!(PkgVersionVal, PKG_VERSION_TYPE);
object_val!(PkgFileVal, PKG_FILE_TYPE);
object_val!(PkgProjectVal, PKG_PROJECT_TYPE);

impl<'a> Indexer for PkgVal<'a> {
    fn get<'b, 'v>(&'b self, field: &dyn Val) -> Result<CowVal<'b, 'v>, ExecutionError>
    where
        Self: 'v,
    {
        match field_name(field)? {
            "id" => Ok(CowVal::Borrowed(&self.id)),
            "version" => Ok(CowVal::Borrowed(&self.version)),
            "file" => Ok(CowVal::Borrowed(&self.file)),
            "project" => Ok(CowVal::Borrowed(&self.project)),
            other => Err(absent(&format!("pkg.{other}"))),
        }
    }

    fn steal<'v>(self: Box<Self>, field: &dyn Val) -> Result<Box<dyn Val + 'v>, ExecutionError>
    where
        Self: 'v,
    {
        self.get(field).map(CowVal::into_owned)
    }
}

impl<'a> Indexer for PkgVersionVal<'a> {
    fn get<'b, 'v>(&'b self, field: &dyn Val) -> Result<CowVal<'b, 'v>, ExecutionError>
    where
        Self: 'v,
    {
        match field_name(field)? {
            "id" => match &self.id {
                Some(id) => Ok(CowVal::Borrowed(id)),
                None => Err(absent(
                    "pkg.version.id (the file is not a wheel or sdist whose version could be read)",
                )),
            },
            "upload_time" => match self.upload_time {
                Some(text) => parse_timestamp(text).map(CowVal::owned),
                None => Err(absent(
                    "pkg.version.upload_time (the upstream gave no upload time for this file)",
                )),
            },
            "yanked" => Ok(CowVal::Borrowed(&self.yanked)),
            other => Err(absent(&format!("pkg.version.{other}"))),
        }
    }

    fn steal<'v>(self: Box<Self>, field: &dyn Val) -> Result<Box<dyn Val + 'v>, ExecutionError>
    where
        Self: 'v,
    {
        self.get(field).map(CowVal::into_owned)
    }
}

impl<'a> Indexer for PkgFileVal<'a> {
    fn get<'b, 'v>(&'b self, field: &dyn Val) -> Result<CowVal<'b, 'v>, ExecutionError>
    where
        Self: 'v,
    {
        match field_name(field)? {
            "name" => Ok(CowVal::Borrowed(&self.name)),
            "kind" => Ok(CowVal::Borrowed(&self.kind)),
            "provenance" => Ok(CowVal::Borrowed(&self.provenance)),
            other => Err(absent(&format!("pkg.file.{other}"))),
        }
    }

    fn steal<'v>(self: Box<Self>, field: &dyn Val) -> Result<Box<dyn Val + 'v>, ExecutionError>
    where
        Self: 'v,
    {
        self.get(field).map(CowVal::into_owned)
    }
}

impl<'a> Indexer for PkgProjectVal<'a> {
    fn get<'b, 'v>(&'b self, field: &dyn Val) -> Result<CowVal<'b, 'v>, ExecutionError>
    where
        Self: 'v,
    {
        match field_name(field)? {
            "status" => Ok(CowVal::Borrowed(&self.status)),
            other => Err(absent(&format!("pkg.project.{other}"))),
        }
    }

    fn steal<'v>(self: Box<Self>, field: &dyn Val) -> Result<Box<dyn Val + 'v>, ExecutionError>
    where
        Self: 'v,
    {
        self.get(field).map(CowVal::into_owned)
    }
}

/// A PEP 700 `upload-time` (RFC 3339, as the upstream wrote it).
fn parse_timestamp(text: &str) -> Result<CelTimestamp, ExecutionError> {
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .map(CelTimestamp::from)
        .map_err(|error| {
            let shown: String = text.chars().take(64).collect();
            ExecutionError::function_error(
                "pkg.version.upload_time",
                format!(
                    "the upstream's upload time '{}' is not an RFC 3339 timestamp ({error})",
                    shown.escape_debug()
                ),
            )
        })
}

fn timestamp_of(time: SystemTime) -> CelTimestamp {
    CelTimestamp::from(chrono::DateTime::<chrono::Utc>::from(time).fixed_offset())
}

/// The variables of one evaluation: `pkg` for one file, and `now`.
pub(crate) struct Scope<'a> {
    pkg: PkgVal<'a>,
    now: SystemTime,
}

impl<'a> Scope<'a> {
    pub(crate) fn new(file: &'a FileFacts<'a>, now: SystemTime) -> Scope<'a> {
        Scope {
            pkg: PkgVal {
                id: CelString::from(file.project.as_str()),
                version: PkgVersionVal {
                    id: file.version.map(CelString::from),
                    upload_time: file.upload_time,
                    yanked: CelBool::from(file.yanked),
                },
                file: PkgFileVal {
                    name: CelString::from(file.filename),
                    kind: CelString::from(file.kind.as_str()),
                    provenance: CelBool::from(file.provenance),
                },
                project: PkgProjectVal {
                    status: CelString::from(file.status.as_str()),
                },
            },
            now,
        }
    }
}

impl VariableResolver for Scope<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        match variable {
            "pkg" => Some(CowVal::Borrowed(&self.pkg)),
            "now" => Some(CowVal::owned(timestamp_of(self.now))),
            _ => None,
        }
    }
}

/// Evaluates a checked condition for one file: `Ok(matches)`, or why it could not be evaluated.
pub(crate) fn evaluate<'s>(
    program: &Program,
    base: &'s Context<'s, 's>,
    scope: &'s Scope<'s>,
) -> Result<bool, String> {
    let mut context = base.new_inner_scope();
    context.set_variable_resolver(scope);
    let value = Value::resolve_val(program.expression(), &context).map_err(|error| {
        let message = error.to_string();
        if message.contains(VERSION_TYPE.name()) {
            format!("{message}; compare version() with version(), e.g. version(pkg.version.id) < version('3.0')")
        } else {
            message
        }
    })?;
    match value.downcast_ref::<CelBool>() {
        Some(matches) => Ok(*matches.inner()),
        None => Err(format!(
            "the condition gave a value of type {}, not a bool",
            value.get_type().name()
        )),
    }
}

/// The context every evaluation's inner scope hangs off: the environment and nothing else.
pub(crate) fn base_context(env: Arc<Env>) -> Context<'static, 'static> {
    Context::with_env(env)
}
