//! The iomux load client and lab.
//!
//! - [`dispatch`]: the libevent dispatch benchmark (N registered socket pairs,
//!   A made readable per pass), shared by the criterion bench and the lab.
//! - [`load`]: `iomux load`, a load client built on the iomux library.
//! - [`lab`]: `iomux lab`, the experiments and their report.

pub mod dispatch;
pub mod lab;
pub mod load;
