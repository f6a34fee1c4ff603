//! mistral.rs interop (cargo feature `mistralrs`): stock mistral.rs as a baseline and an eval
//! arm ([`stock`]), and a front that answers `mistralrs_core::Request`s with our engine
//! ([`front`]), requests checked by [`validate`].

pub mod front;
mod reply;
pub mod stock;
pub mod validate;

pub use front::{AdaInferFront, FrontOptions};
pub use stock::{StockGeneration, StockMistralRs, StockOptions};
pub use validate::Unsupported;
