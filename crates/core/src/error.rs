//! The core's errors in one type, for callers that hold any of them. Each module keeps its own
//! error enum (what a parser can say is part of its contract); this type only gathers them
//! and keeps each one as the source, so nothing is flattened into text on the way up.
//!
//! `check` does not fail with an error: it reports every [`Problem`](crate::Problem) at once.

/// Any error a core parser or allocator returns. The message is the module error's own,
/// unchanged; it says what is wrong and what is allowed, and the caller adds where.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A WireGuard key that is not one.
    #[error(transparent)]
    Key(#[from] crate::key::KeyError),
    /// An endpoint that is not `HOST:PORT`.
    #[error(transparent)]
    Endpoint(#[from] crate::endpoint::EndpointError),
    /// A date that is not `YYYY-MM-DD` in range.
    #[error(transparent)]
    Date(#[from] crate::date::DateError),
    /// A peer or interface name that is not allowed.
    #[error(transparent)]
    Name(#[from] crate::name::NameError),
    /// A wg-quick config that is not one.
    #[error(transparent)]
    Conf(#[from] crate::conf::ConfError),
    /// A device report (`wg show dump`, UAPI) that could not be read.
    #[error(transparent)]
    Device(#[from] crate::device::ParseError),
    /// No free address left in the subnet.
    #[error(transparent)]
    Pool(#[from] crate::ipam::PoolExhausted),
}
