//! DNS: the zone we serve and the pure answer path.

pub mod answer;
pub mod wire;
pub mod zone;

pub use answer::{respond, respond_local, DropReason, Outcome, Rng, Transport};
pub use zone::{AnswerMode, Zone, ZoneError, ZoneSettings};
