//! DNS: the zone we serve and the pure answer path.

pub mod answer;
pub(crate) mod ecs;
pub mod placement;
pub mod wire;
pub mod zone;

pub use answer::{respond, respond_local, DropReason, Outcome, Rng, Transport};
pub use placement::{LocationRule, Placement};
pub use zone::{AnswerMode, Zone, ZoneError, ZoneSettings};
