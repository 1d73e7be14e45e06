//! The metadata schema's versions. Each migration raises the schema level by one; a
//! binary knows the highest level it understands and refuses data at any other level
//! (the upgrade command moves data between levels).

/// One schema step, in each backend's dialect.
pub struct Migration {
    pub level: u32,
    pub name: &'static str,
    pub sqlite: &'static str,
    pub postgres: &'static str,
}

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        level: 1,
        name: "initial: repositories, blobs, manifests, tags, uploads",
        sqlite: include_str!("sql/sqlite/0001_initial.sql"),
        postgres: include_str!("sql/postgres/0001_initial.sql"),
    },
    Migration {
        level: 2,
        name:
            "jobs (queue, logs, workers, schedules) and manifest references for garbage collection",
        sqlite: include_str!("sql/sqlite/0002_jobs.sql"),
        postgres: include_str!("sql/postgres/0002_jobs.sql"),
    },
];

/// The schema level this binary reads and writes.
pub const SCHEMA_LEVEL: u32 = 2;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_consecutive_and_end_at_schema_level() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.level, i as u32 + 1, "{}", m.name);
        }
        assert_eq!(MIGRATIONS.last().unwrap().level, SCHEMA_LEVEL);
    }
}
