//! Content addresses of modules.

use std::fmt;
use std::str::FromStr;

/// A module's identity: the BLAKE3 hash of its bytes. The registry knows a
/// guest application as `wasm:<id in hex>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModuleId(pub [u8; 32]);

/// The prefix of a guest application's name in a job.
pub const APP_PREFIX: &str = colony_core::divisible::GUEST_APP_PREFIX;

impl ModuleId {
    /// The id of a module with these bytes.
    pub fn of(bytes: &[u8]) -> ModuleId {
        ModuleId(colony_core::modules::content_hash(bytes))
    }

    /// The application name jobs use for this module.
    pub fn app_name(&self) -> String {
        format!("{APP_PREFIX}{self}")
    }

    /// The module an application name refers to, if it names one.
    pub fn from_app_name(name: &str) -> Option<Result<ModuleId, String>> {
        name.strip_prefix(APP_PREFIX).map(str::parse)
    }
}

impl fmt::Display for ModuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ModuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ModuleId({self})")
    }
}

impl FromStr for ModuleId {
    type Err = String;

    fn from_str(text: &str) -> Result<ModuleId, String> {
        let text = text.trim();
        if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "a module id is 64 hex digits (a BLAKE3 hash), got {text:?}"
            ));
        }
        let mut id = [0u8; 32];
        for (i, byte) in id.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16)
                .map_err(|e| format!("bad module id {text:?}: {e}"))?;
        }
        Ok(ModuleId(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_print_and_parse() {
        let id = ModuleId::of(b"\0asm");
        assert_eq!(id.to_string().parse::<ModuleId>(), Ok(id));
        assert_eq!(ModuleId::from_app_name(&id.app_name()), Some(Ok(id)));
        assert_eq!(ModuleId::from_app_name("nqueens"), None);
        assert!("abc".parse::<ModuleId>().is_err());
        assert!("zz".repeat(32).parse::<ModuleId>().is_err());
    }
}
