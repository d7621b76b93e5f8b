//! The idiomatic public data types. They convert to and from the frozen mirrors in
//! [`abi`](crate::abi); their wire codes (kind names, finish reasons, delta codes) are part of
//! the contract, their methods are not.

pub(crate) mod context;
pub(crate) mod delta;
pub(crate) mod error;
pub(crate) mod info;
pub(crate) mod output;
pub(crate) mod request;
