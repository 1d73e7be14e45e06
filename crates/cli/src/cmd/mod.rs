pub mod serve;
pub mod version;
