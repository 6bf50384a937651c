//! The cost estimate of a preview, per day: machine size x hours running + Neon compute
//! (CU-hours) + Neon storage, from the `[cost]` price table. Pure.
//!
//! The default prices are the providers' published list prices (US dollars):
//! - Fly Machines, <https://fly.io/docs/about/pricing/> and the price list in
//!   <https://fly.io/blog/new-vms-more-ram-extra-cpu-and-a-dollar-menu/>: shared-cpu-1x with
//!   256 MB $1.94/month, performance-1x with 2 GB $31.00/month, extra RAM $5/GB-month; a month
//!   is billed as 730 hours, so $0.00266, $0.0425 and $0.00685 an hour. A vCPU includes 256 MB
//!   (shared) or 2 GB (performance); memory beyond that is priced per GB (this reproduces the
//!   published 1 GB and 2 GB shared sizes to the cent). Stopped and suspended machines pay no
//!   CPU or RAM.
//! - Neon, <https://neon.com/docs/introduction/plans> (Launch plan, usage-based pricing of
//!   2025-08-14): $0.14 per CU-hour of compute, $0.35 per GB-month of storage.
//!
//! It is an estimate of the ceiling: the hours counted are the hours a preview may run (all day,
//! or the `[lifecycle] active_hours`); a preview that sleeps when idle (`[fly] auto_stop`,
//! `[database] suspend_after`) pays less. Plan allowances and minimum fees are not subtracted.

use serde::Serialize;

use crate::config::{ActiveHours, CostSettings};

/// Hours in a billing month (Fly and Neon both prorate by the hour of a 730-hour month).
pub const HOURS_PER_MONTH: f64 = 730.0;

/// One machine's size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MachineSize {
    /// `shared` or `performance`.
    pub cpu_kind: String,
    pub cpus: u32,
    pub memory_mb: u32,
}

/// What a preview is made of, for the estimate.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Footprint {
    /// Its machines (the app's, and the access gate's when there is one).
    pub machines: Vec<MachineSize>,
    /// It has a Neon branch (whose compute runs when the app does).
    pub database: bool,
    /// The branch's logical size, when the provider reports it.
    pub storage_bytes: Option<u64>,
}

/// A per-day estimate, in US dollars.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Estimate {
    /// Hours a day the preview may run (24, or the active hours' daily average).
    pub hours_per_day: f64,
    pub machines: f64,
    pub compute: f64,
    pub storage: f64,
    pub total: f64,
}

impl std::ops::Add for Estimate {
    type Output = Estimate;
    fn add(self, o: Estimate) -> Estimate {
        Estimate {
            hours_per_day: self.hours_per_day.max(o.hours_per_day),
            machines: self.machines + o.machines,
            compute: self.compute + o.compute,
            storage: self.storage + o.storage,
            total: self.total + o.total,
        }
    }
}

/// Hours a day a preview may run: 24, or the average day of the active hours' week.
pub fn hours_per_day(active: Option<&ActiveHours>) -> f64 {
    active.map_or(24.0, |a| a.hours_per_week() / 7.0)
}

/// One machine's price per running hour.
pub fn machine_hour(m: &MachineSize, p: &CostSettings) -> f64 {
    let cpus = f64::from(m.cpus.max(1));
    let (cpu, included_mb) = if m.cpu_kind == "performance" {
        (p.fly_performance_cpu_hour, 2048.0)
    } else {
        (p.fly_shared_cpu_hour, 256.0)
    };
    let extra_gb = (f64::from(m.memory_mb) - cpus * included_mb).max(0.0) / 1024.0;
    cpus * cpu + extra_gb * p.fly_memory_gb_hour
}

/// The per-day estimate of `f` when it may run `hours_per_day` hours a day.
pub fn estimate(f: &Footprint, hours_per_day: f64, p: &CostSettings) -> Estimate {
    let machines: f64 = f
        .machines
        .iter()
        .map(|m| machine_hour(m, p) * hours_per_day)
        .sum();
    let compute = if f.database {
        p.neon_compute_units * p.neon_cu_hour * hours_per_day
    } else {
        0.0
    };
    let gb = f.storage_bytes.unwrap_or(0) as f64 / 1e9;
    let storage = gb * p.neon_storage_gb_month * 24.0 / HOURS_PER_MONTH;
    Estimate {
        hours_per_day,
        machines,
        compute,
        storage,
        total: machines + compute + storage,
    }
}

/// `$0.12`, or `$0.0031` below a cent (so that a small preview does not read as free).
pub fn dollars(v: f64) -> String {
    if v > 0.0 && v < 0.01 {
        format!("${v:.4}")
    } else {
        format!("${v:.2}")
    }
}

/// The lifecycle clause's sentence: `about $0.11/day (24 h: machines $0.06, Neon compute
/// $0.05, storage $0.0001)`.
pub fn sentence(e: &Estimate) -> String {
    format!(
        "about {}/day at most ({} h a day running: machines {}, Neon compute {}, storage {})",
        dollars(e.total),
        trim_hours(e.hours_per_day),
        dollars(e.machines),
        dollars(e.compute),
        dollars(e.storage)
    )
}

fn trim_hours(h: f64) -> String {
    if (h - h.round()).abs() < 0.05 {
        format!("{}", h.round() as i64)
    } else {
        format!("{h:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(mb: u32) -> MachineSize {
        MachineSize {
            cpu_kind: "shared".into(),
            cpus: 1,
            memory_mb: mb,
        }
    }

    #[test]
    fn machine_prices_reproduce_the_published_monthly_sizes() {
        let p = CostSettings::default();
        let month = |m: &MachineSize| machine_hour(m, &p) * HOURS_PER_MONTH;
        // Fly's list: shared-cpu-1x 256 MB $1.94, 1 GB $5.70, 2 GB $10.70; performance-1x 2 GB
        // $31.00, 4 GB $41.01.
        assert!(
            (month(&shared(256)) - 1.94).abs() < 0.01,
            "{}",
            month(&shared(256))
        );
        assert!((month(&shared(1024)) - 5.70).abs() < 0.01);
        assert!((month(&shared(2048)) - 10.70).abs() < 0.01);
        let perf = |mb| MachineSize {
            cpu_kind: "performance".into(),
            cpus: 1,
            memory_mb: mb,
        };
        assert!((month(&perf(2048)) - 31.0).abs() < 0.05);
        assert!((month(&perf(4096)) - 41.0).abs() < 0.05);
    }

    #[test]
    fn a_day_adds_machines_compute_and_storage() {
        let p = CostSettings::default();
        let f = Footprint {
            machines: vec![shared(256), shared(256)],
            database: true,
            storage_bytes: Some(2_000_000_000),
        };
        let e = estimate(&f, 24.0, &p);
        assert!((e.machines - 2.0 * 0.00266 * 24.0).abs() < 1e-9);
        assert!((e.compute - 0.25 * 0.14 * 24.0).abs() < 1e-9);
        assert!((e.storage - 2.0 * 0.35 * 24.0 / 730.0).abs() < 1e-9);
        assert!((e.total - (e.machines + e.compute + e.storage)).abs() < 1e-12);
        // Active hours scale the running parts, not the storage.
        let h = ActiveHours::parse("Mon-Fri 07:00-21:00 UTC").unwrap();
        assert_eq!(hours_per_day(Some(&h)), 10.0);
        let w = estimate(&f, hours_per_day(Some(&h)), &p);
        assert!((w.machines - e.machines * 10.0 / 24.0).abs() < 1e-9);
        assert!((w.compute - e.compute * 10.0 / 24.0).abs() < 1e-9);
        assert_eq!(w.storage, e.storage);
        let s = sentence(&w);
        assert!(
            s.starts_with(&format!(
                "about {}/day at most (10 h a day running:",
                dollars(w.total)
            )),
            "{s}"
        );
        let sum = e + w;
        assert!((sum.total - e.total - w.total).abs() < 1e-12);
    }

    #[test]
    fn overrides_change_the_prices_and_nothing_costs_nothing() {
        let p = CostSettings {
            fly_shared_cpu_hour: 1.0,
            neon_cu_hour: 0.0,
            ..CostSettings::default()
        };
        let e = estimate(
            &Footprint {
                machines: vec![shared(256)],
                database: true,
                storage_bytes: None,
            },
            2.0,
            &p,
        );
        assert_eq!((e.machines, e.compute, e.storage), (2.0, 0.0, 0.0));
        assert_eq!(estimate(&Footprint::default(), 24.0, &p).total, 0.0);
        assert_eq!(dollars(0.0), "$0.00");
        assert_eq!(dollars(0.004), "$0.0040");
        assert_eq!(dollars(1.5), "$1.50");
    }
}
