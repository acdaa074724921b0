//! The trait impls several policy types share, written once: `text_impls!` for a type
//! that is its text, parsed, and `source_list_impls!` for an allowlist that is its source
//! strings.

/// The trait impls of a type that is its text, parsed: `Debug` (`Type("text")`),
/// `Display`, `FromStr`, and serde's `TryFrom<String>` / `Into<String>` through
/// `Type::parse` and `as_str`.
macro_rules! text_impls {
    ($t:ident) => {
        impl ::std::fmt::Debug for $t {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.debug_tuple(stringify!($t)).field(&self.as_str()).finish()
            }
        }

        impl ::std::fmt::Display for $t {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $t {
            type Err = $crate::error::InputError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $t::parse(s)
            }
        }

        impl TryFrom<String> for $t {
            type Error = $crate::error::InputError;

            fn try_from(s: String) -> Result<Self, Self::Error> {
                $t::parse(&s)
            }
        }

        impl From<$t> for String {
            fn from(value: $t) -> String {
                value.as_str().to_string()
            }
        }
    };
}

pub(super) use text_impls;

/// The trait impls every allowlist shares: it is its source strings (`Debug`, equality,
/// serde through `Vec<String>`), whatever it precompiled from them.
macro_rules! source_list_impls {
    ($t:ident) => {
        impl ::std::fmt::Debug for $t {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.debug_tuple(stringify!($t)).field(&self.sources).finish()
            }
        }

        impl PartialEq for $t {
            fn eq(&self, other: &Self) -> bool {
                self.sources == other.sources
            }
        }

        impl Eq for $t {}

        impl TryFrom<Vec<String>> for $t {
            type Error = $crate::error::InputError;

            fn try_from(v: Vec<String>) -> Result<Self, Self::Error> {
                $t::new(v)
            }
        }

        impl From<$t> for Vec<String> {
            fn from(list: $t) -> Vec<String> {
                list.sources
            }
        }
    };
}

pub(super) use source_list_impls;
