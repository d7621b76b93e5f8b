//! The idiomatic public data types. They convert to and from the frozen mirrors in
//! [`abi`](crate::abi); their wire codes (kind names, finish reasons, delta codes) are part of
//! the contract, their methods are not.

/// An open enum: known values with their wire names, and `Other(String)` (written first, so
/// the macro can tell it apart) for the rest, so a value from a newer peer arrives intact
/// instead of failing. Writes the enum, `as_str`, the
/// conversions from and to `String` (serde goes through them) and `Display`.
macro_rules! open_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $(#[$other_meta:meta])* Other(String);
            $( $(#[$variant_meta:meta])* $variant:ident = $wire:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(from = "String", into = "String")]
        #[non_exhaustive]
        pub enum $name {
            $( $(#[$variant_meta])* $variant, )+
            $(#[$other_meta])* Other(String),
        }

        impl $name {
            /// The wire name.
            pub fn as_str(&self) -> &str {
                match self {
                    $( Self::$variant => $wire, )+
                    Self::Other(other) => other,
                }
            }
        }

        impl From<String> for $name {
            fn from(text: String) -> Self {
                match text.as_str() {
                    $( $wire => Self::$variant, )+
                    _ => Self::Other(text),
                }
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> Self {
                match value {
                    $name::Other(other) => other,
                    known => known.as_str().to_owned(),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

pub(crate) mod context;
pub(crate) mod delta;
pub(crate) mod error;
pub(crate) mod info;
pub(crate) mod output;
pub(crate) mod request;
