//! An object-storage mount's statuses.
//!
//! ```text
//! MOUNTING ──► MOUNTED ──stop──► UNMOUNTED ──start──► MOUNTING
//!     └──────────┴──► FAILED (the health loop makes it again)
//! ```

crate::status_enum! {
    /// A mount's status.
    pub enum MountStatus {
        Mounting = "MOUNTING",
        Mounted = "MOUNTED",
        /// The notebook is stopped: the mount is made again at its next start.
        Unmounted = "UNMOUNTED",
        Failed = "FAILED",
    }
}

/// The statuses by name.
pub mod status {
    use super::MountStatus;
    pub const MOUNTING: MountStatus = MountStatus::Mounting;
    pub const MOUNTED: MountStatus = MountStatus::Mounted;
    pub const UNMOUNTED: MountStatus = MountStatus::Unmounted;
    pub const FAILED: MountStatus = MountStatus::Failed;
}
