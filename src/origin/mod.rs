//! Origin controls (SPEC §6): where a package may come from. Download rules decide which
//! versions may be served; these decide whether a version may enter through an upload or an
//! upstream, which is what stops a public package from shadowing a private name.

pub mod explain;
pub mod package;
pub mod record;
