//! `[lifecycle] active_hours = "Mon-Fri 07:00-20:00 Europe/Berlin"`: the weekly window in which
//! previews may run. Outside it the scheduled sweep stops their machines (they start again on
//! the first request). Pure: parsing and "is this instant inside?".
//!
//! The value is `<days> <HH:MM>-<HH:MM> <IANA zone>`. Days are `Mon-Fri`, `Sat,Sun`, `Mon,Wed-Fri`,
//! a wrapping range (`Fri-Mon`), or `daily`. An end before the start is an overnight window
//! (`Mon-Fri 22:00-06:00 UTC`: from 22:00 on each listed day to 06:00 the next morning); `24:00`
//! ends at midnight. Times are wall-clock times in the zone: the window follows daylight saving
//! time, so `07:00 Europe/Berlin` is 06:00 UTC in winter and 05:00 UTC in summer. The zone
//! rules come from `chrono-tz` (the IANA database compiled in) rather than hand-written offsets.

use std::fmt;

use chrono::{DateTime, Datelike, NaiveTime, Timelike, Utc, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A parsed `active_hours` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveHours {
    /// Days on which a window starts, Monday first.
    days: [bool; 7],
    /// Minutes after local midnight.
    start: u32,
    /// Minutes after local midnight; `<= start` means the window ends the next day.
    end: u32,
    tz: Tz,
    /// The text as written (shown back to users).
    text: String,
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn day(s: &str) -> Result<usize, String> {
    const FULL: [&str; 7] = [
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ];
    let l = s.to_ascii_lowercase();
    DAYS.iter()
        .zip(FULL)
        .position(|(short, full)| l == *short || l == full)
        .ok_or_else(|| format!("unknown day {s:?} (use Mon, Tue, Wed, Thu, Fri, Sat, Sun)"))
}

fn clock(s: &str, allow_24: bool) -> Result<u32, String> {
    let bad = || format!("{s:?} is not a time like 07:00");
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: u32 = h.parse().map_err(|_| bad())?;
    let m: u32 = m.parse().map_err(|_| bad())?;
    if m >= 60 || h > 24 || (h == 24 && (m != 0 || !allow_24)) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

impl ActiveHours {
    /// Parses `<days> <HH:MM>-<HH:MM> <zone>`; the error says what is wrong (the caller names
    /// the key and the line).
    pub fn parse(text: &str) -> Result<ActiveHours, String> {
        let shape = "expected something like \"Mon-Fri 07:00-20:00 Europe/Berlin\"";
        let parts: Vec<&str> = text.split_whitespace().collect();
        let [days_s, hours_s, tz_s] = parts[..] else {
            return Err(format!(
                "{text:?}: {shape} (days, hours, time zone; {} part(s) given)",
                parts.len()
            ));
        };
        let mut days = [false; 7];
        if days_s.eq_ignore_ascii_case("daily") {
            days = [true; 7];
        } else {
            for item in days_s.split(',') {
                match item.split_once('-') {
                    Some((a, b)) => {
                        let (a, b) = (day(a)?, day(b)?);
                        let mut d = a;
                        loop {
                            days[d] = true;
                            if d == b {
                                break;
                            }
                            d = (d + 1) % 7;
                        }
                    }
                    None => days[day(item)?] = true,
                }
            }
        }
        let (a, b) = hours_s
            .split_once('-')
            .ok_or_else(|| format!("{hours_s:?} is not a range of hours like 07:00-20:00"))?;
        let start = clock(a, false)?;
        let end = clock(b, true)?;
        if start == end {
            return Err(format!(
                "{hours_s:?} is an empty window (the start equals the end)"
            ));
        }
        // IANA names are case-sensitive (`Europe/Berlin`); `utc` is forgiven.
        let tz: Tz = if tz_s.eq_ignore_ascii_case("utc") {
            Ok(Tz::UTC)
        } else {
            tz_s.parse::<Tz>()
        }
        .map_err(|_| {
            format!(
                "unknown time zone {tz_s:?} (use an IANA name such as Europe/Berlin, America/New_York or UTC)"
            )
        })?;
        Ok(ActiveHours {
            days,
            start,
            end,
            tz,
            text: text.split_whitespace().collect::<Vec<_>>().join(" "),
        })
    }

    fn overnight(&self) -> bool {
        self.end <= self.start
    }

    /// True when `at` falls inside the window (local wall-clock time in the zone).
    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        let local = at.with_timezone(&self.tz);
        let wd = local.weekday().num_days_from_monday() as usize;
        let t = local.time();
        let minute = t.hour() * 60 + t.minute();
        if !self.overnight() {
            return self.days[wd] && minute >= self.start && minute < self.end;
        }
        let yesterday = (wd + 6) % 7;
        (self.days[wd] && minute >= self.start) || (self.days[yesterday] && minute < self.end)
    }

    /// Hours inside the window in a week (by the wall clock; a DST week is an hour off), for
    /// the cost estimate.
    pub fn hours_per_week(&self) -> f64 {
        let len = if self.overnight() {
            24 * 60 - self.start + self.end
        } else {
            self.end - self.start
        };
        self.days.iter().filter(|d| **d).count() as f64 * len as f64 / 60.0
    }

    /// The zone's name (`Europe/Berlin`).
    pub fn zone(&self) -> &str {
        self.tz.name()
    }

    /// The start of the window as a wall-clock time.
    pub fn start_time(&self) -> NaiveTime {
        NaiveTime::from_hms_opt(self.start / 60, self.start % 60, 0).unwrap_or_default()
    }

    /// The days on which a window starts.
    pub fn weekdays(&self) -> Vec<Weekday> {
        (0..7)
            .filter(|i| self.days[*i])
            .filter_map(|i| Weekday::try_from(i as u8).ok())
            .collect()
    }
}

impl fmt::Display for ActiveHours {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for ActiveHours {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ActiveHours::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl Serialize for ActiveHours {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn weekday_window_in_berlin_follows_daylight_saving_time() {
        let h = ActiveHours::parse("Mon-Fri 07:00-20:00 Europe/Berlin").unwrap();
        assert_eq!(h.hours_per_week(), 65.0);
        // Winter (CET, UTC+1): 07:00 local is 06:00 UTC.
        assert!(!h.contains(at("2026-01-14T05:59:00Z")));
        assert!(h.contains(at("2026-01-14T06:00:00Z")));
        assert!(h.contains(at("2026-01-14T18:59:00Z")));
        assert!(!h.contains(at("2026-01-14T19:00:00Z")));
        // Summer (CEST, UTC+2): 07:00 local is 05:00 UTC.
        assert!(h.contains(at("2026-07-15T05:00:00Z")));
        assert!(!h.contains(at("2026-07-15T04:59:00Z")));
        assert!(!h.contains(at("2026-07-15T18:00:00Z")));
        // The weekend is outside all day (Sat 2026-01-17).
        assert!(!h.contains(at("2026-01-17T12:00:00Z")));
    }

    #[test]
    fn the_days_around_the_dst_switches() {
        // Europe/Berlin springs forward on Sun 2026-03-29 (02:00 -> 03:00) and falls back on
        // Sun 2026-10-25 (03:00 -> 02:00). A daily 02:30-03:30 window: on the spring day 02:30
        // local never happens, so the window opens at 03:00 CEST (01:00 UTC).
        let h = ActiveHours::parse("daily 02:30-03:30 Europe/Berlin").unwrap();
        assert!(!h.contains(at("2026-03-29T00:59:00Z"))); // 01:59 CET
        assert!(h.contains(at("2026-03-29T01:00:00Z"))); // 03:00 CEST
        assert!(h.contains(at("2026-03-29T01:29:00Z"))); // 03:29 CEST
        assert!(!h.contains(at("2026-03-29T01:30:00Z"))); // 03:30 CEST
        // The Monday after: 02:30 CEST is 00:30 UTC.
        assert!(h.contains(at("2026-03-30T00:30:00Z")));
        // Autumn: 02:30 local happens twice (CEST then CET); both are inside.
        assert!(h.contains(at("2026-10-25T00:30:00Z"))); // 02:30 CEST
        assert!(h.contains(at("2026-10-25T01:30:00Z"))); // 02:30 CET
        assert!(!h.contains(at("2026-10-25T02:30:00Z"))); // 03:30 CET
        // New York switches on other dates (2026-03-08): the same UTC instant is inside before
        // and outside after.
        let ny = ActiveHours::parse("Mon-Fri 09:00-17:00 America/New_York").unwrap();
        assert!(ny.contains(at("2026-03-06T14:00:00Z"))); // Fri 09:00 EST
        assert!(ny.contains(at("2026-03-09T13:00:00Z"))); // Mon 09:00 EDT
        assert!(!ny.contains(at("2026-03-09T12:59:00Z"))); // Mon 08:59 EDT
    }

    #[test]
    fn overnight_and_wrapping_ranges() {
        let h = ActiveHours::parse("Mon-Fri 22:00-06:00 UTC").unwrap();
        assert_eq!(h.hours_per_week(), 40.0);
        assert!(h.contains(at("2026-01-12T23:00:00Z"))); // Mon 23:00
        assert!(h.contains(at("2026-01-13T05:59:00Z"))); // Tue 05:59, from Monday
        assert!(!h.contains(at("2026-01-13T06:00:00Z")));
        assert!(h.contains(at("2026-01-17T03:00:00Z"))); // Sat 03:00, from Friday night
        assert!(!h.contains(at("2026-01-12T03:00:00Z"))); // Mon 03:00: Sunday started none
        assert!(!h.contains(at("2026-01-17T23:00:00Z"))); // Sat night
        let w = ActiveHours::parse("Fri-Mon 00:00-24:00 Asia/Tokyo").unwrap();
        assert_eq!(w.weekdays().len(), 4);
        assert_eq!(w.hours_per_week(), 96.0);
        assert!(w.contains(at("2026-01-18T12:00:00Z"))); // Sun
        assert!(!w.contains(at("2026-01-14T12:00:00Z"))); // Wed
        let l = ActiveHours::parse("mon,wed-thu 8:30-12:00 utc").unwrap();
        assert_eq!(l.hours_per_week(), 10.5);
        assert_eq!(l.zone(), "UTC");
        assert_eq!(l.to_string(), "mon,wed-thu 8:30-12:00 utc");
        assert!(!l.contains(at("2026-01-13T09:00:00Z"))); // Tue
    }

    #[test]
    fn bad_values_say_what_is_wrong() {
        let e = |s: &str| ActiveHours::parse(s).unwrap_err();
        assert!(e("Mon-Fri 07:00-20:00").contains("expected something like"));
        assert!(e("Mon-Fry 07:00-20:00 UTC").contains("unknown day \"Fry\""));
        assert!(e("Mon-Fri 7-20 UTC").contains("not a time like 07:00"));
        assert!(e("Mon-Fri 07:00 UTC").contains("not a range of hours"));
        assert!(e("Mon-Fri 25:00-26:00 UTC").contains("\"25:00\""));
        assert!(e("Mon-Fri 24:00-06:00 UTC").contains("\"24:00\""));
        assert!(e("Mon-Fri 07:00-07:00 UTC").contains("empty window"));
        let tz = e("Mon-Fri 07:00-20:00 Europe/Berlinn");
        assert!(tz.contains("unknown time zone \"Europe/Berlinn\""), "{tz}");
    }
}
