//! Plugin-side support: the trait authors implement and everything the export macro generates
//! around it. Nothing here is part of the frozen contract; it may change in any release.

pub(crate) mod author;
pub(crate) mod direct;
pub(crate) mod export;
mod front;
pub(crate) mod glue;
mod guarded;
pub(crate) mod logging;
pub(crate) mod runtime;
mod scope;
mod turn_id;
mod turns;
