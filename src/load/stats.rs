//! The small statistics the gate needs: the median, the normal distribution, a one-sided
//! two-proportion z-test for error rates, and the Mann-Whitney U rank test for per-run latencies.
//!
//! Everything here is pure and tested against values computed by hand or by enumeration.

/// The median of a slice (mean of the middle two for an even count); `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v: Vec<f64> = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// The complementary error function (W. J. Cody's rational approximation as given in
/// Numerical Recipes `erfcc`; relative error below 1.2e-7, plenty for a p-value).
pub fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

/// P(Z > z) for a standard normal Z.
pub fn normal_sf(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// One-sided two-proportion z-test: the p-value that the current error proportion
/// (`e2` errors out of `n2`) is higher than the baseline's (`e1` out of `n1`) by chance.
/// Returns 1.0 when either sample is empty or there is no variance (no errors anywhere).
pub fn two_proportion_p(e1: u64, n1: u64, e2: u64, n2: u64) -> f64 {
    if n1 == 0 || n2 == 0 {
        return 1.0;
    }
    let (p1, p2) = (e1 as f64 / n1 as f64, e2 as f64 / n2 as f64);
    let pooled = (e1 + e2) as f64 / (n1 + n2) as f64;
    let var = pooled * (1.0 - pooled) * (1.0 / n1 as f64 + 1.0 / n2 as f64);
    if var <= 0.0 {
        return 1.0;
    }
    normal_sf((p2 - p1) / var.sqrt())
}

/// The Mann-Whitney U statistic of `a` against `b`: the number of pairs (x in a, y in b) with
/// x > y, ties counting one half. `U_a + U_b = len(a) * len(b)`.
pub fn mann_whitney_u(a: &[f64], b: &[f64]) -> f64 {
    let mut u = 0.0;
    for x in a {
        for y in b {
            if x > y {
                u += 1.0;
            } else if x == y {
                u += 0.5;
            }
        }
    }
    u
}

/// One-sided Mann-Whitney test: the p-value for "values in `current` tend to be larger than in
/// `baseline`". Exact (by counting rank arrangements) for small samples without ties, the normal
/// approximation with tie correction and continuity correction otherwise.
pub fn mann_whitney_greater_p(current: &[f64], baseline: &[f64]) -> f64 {
    let (n1, n2) = (current.len(), baseline.len());
    if n1 == 0 || n2 == 0 {
        return 1.0;
    }
    let u = mann_whitney_u(current, baseline);
    let mut all: Vec<f64> = current.iter().chain(baseline).copied().collect();
    all.sort_by(f64::total_cmp);
    let has_ties = all.windows(2).any(|w| w[0] == w[1]);
    if !has_ties && n1 * n2 <= 400 {
        // P(U >= u) under H0, from the exact distribution of U.
        let counts = u_distribution(n1, n2);
        let total: f64 = counts.iter().sum();
        let k = u.round() as usize;
        let tail: f64 = counts.iter().skip(k).sum();
        return tail / total;
    }
    let (n1f, n2f) = (n1 as f64, n2 as f64);
    let n = n1f + n2f;
    let mean = n1f * n2f / 2.0;
    // Tie correction: sum of (t^3 - t) over groups of tied values.
    let mut tie_sum = 0.0;
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j + 1 < all.len() && all[j + 1] == all[i] {
            j += 1;
        }
        let t = (j - i + 1) as f64;
        tie_sum += t * t * t - t;
        i = j + 1;
    }
    let var = n1f * n2f / 12.0 * ((n + 1.0) - tie_sum / (n * (n - 1.0)));
    if var <= 0.0 {
        return 1.0;
    }
    normal_sf((u - mean - 0.5) / var.sqrt())
}

/// The number of arrangements giving each value of U (index = U), for sample sizes m and n,
/// by the recurrence f(m, n, u) = f(m-1, n, u-n) + f(m, n-1, u).
fn u_distribution(m: usize, n: usize) -> Vec<f64> {
    let max = m * n;
    // table[i][j] = distribution for sizes (i, j); built row by row.
    let mut prev: Vec<Vec<f64>> = (0..=n).map(|_| vec![1.0]).collect(); // i = 0: U = 0 only
    for i in 1..=m {
        let mut cur: Vec<Vec<f64>> = Vec::with_capacity(n + 1);
        cur.push(vec![1.0]); // j = 0
        for j in 1..=n {
            let len = i * j + 1;
            let mut d = vec![0.0; len];
            // the largest value is from the first sample: it beats all j others.
            for (u, c) in prev[j].iter().enumerate() {
                d[u + j] += c;
            }
            for (u, c) in cur[j - 1].iter().enumerate() {
                d[u] += c;
            }
            cur.push(d);
        }
        prev = cur;
    }
    let mut out = prev.swap_remove(n);
    out.resize(max + 1, 0.0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn median_odd_even_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn normal_tail_known_values() {
        assert!(close(normal_sf(0.0), 0.5, 1e-7));
        assert!(close(normal_sf(1.644_853_6), 0.05, 1e-6));
        assert!(close(normal_sf(1.959_964), 0.025, 1e-6));
        assert!(close(normal_sf(-1.959_964), 0.975, 1e-6));
    }

    #[test]
    fn u_statistic_counts_pairs_and_ties() {
        assert_eq!(mann_whitney_u(&[5.0, 6.0], &[1.0, 2.0, 3.0]), 6.0);
        assert_eq!(mann_whitney_u(&[1.0, 2.0, 3.0], &[5.0, 6.0]), 0.0);
        assert_eq!(mann_whitney_u(&[2.0], &[2.0]), 0.5);
    }

    #[test]
    fn mann_whitney_exact_known_values() {
        // Complete separation with 4 vs 4: 1 arrangement of C(8,4) = 70.
        let p = mann_whitney_greater_p(&[5.0, 6.0, 7.0, 8.0], &[1.0, 2.0, 3.0, 4.0]);
        assert!(close(p, 1.0 / 70.0, 1e-12), "{p}");
        // The other direction is certain.
        let p = mann_whitney_greater_p(&[1.0, 2.0, 3.0, 4.0], &[5.0, 6.0, 7.0, 8.0]);
        assert!(close(p, 1.0, 1e-12), "{p}");
        // One swap (U = 15 of 16): arrangements with U >= 15 are 2 of 70.
        let p = mann_whitney_greater_p(&[4.5, 6.0, 7.0, 8.0], &[1.0, 2.0, 3.0, 5.0]);
        assert!(close(p, 2.0 / 70.0, 1e-12), "{p}");
        // 3 vs 3, U = 9 (max): 1 / C(6,3) = 1/20 = 0.05 (scipy: mannwhitneyu(..., 'greater')).
        let p = mann_whitney_greater_p(&[4.0, 5.0, 6.0], &[1.0, 2.0, 3.0]);
        assert!(close(p, 0.05, 1e-12), "{p}");
    }

    #[test]
    fn exact_distribution_matches_enumeration() {
        // Enumerate every way to choose which 3 of 7 ranks belong to the first sample.
        let (m, n) = (3usize, 4usize);
        let mut counts = vec![0.0; m * n + 1];
        for mask in 0u32..(1 << (m + n)) {
            if mask.count_ones() as usize != m {
                continue;
            }
            let a: Vec<f64> = (0..m + n)
                .filter(|i| mask & (1 << i) != 0)
                .map(|i| i as f64)
                .collect();
            let b: Vec<f64> = (0..m + n)
                .filter(|i| mask & (1 << i) == 0)
                .map(|i| i as f64)
                .collect();
            counts[mann_whitney_u(&a, &b) as usize] += 1.0;
        }
        assert_eq!(u_distribution(m, n), counts);
    }

    #[test]
    fn mann_whitney_normal_approximation_with_ties() {
        // 30 vs 30 with a clear shift: tiny p; identical samples: p near 0.5 or above.
        let a: Vec<f64> = (0..30).map(|i| (i % 10) as f64 + 5.0).collect();
        let b: Vec<f64> = (0..30).map(|i| (i % 10) as f64).collect();
        assert!(mann_whitney_greater_p(&a, &b) < 1e-4);
        assert!(mann_whitney_greater_p(&b, &b) > 0.4);
    }

    #[test]
    fn two_proportion_known_values() {
        // 10/1000 vs 30/1000: z = 0.02 / sqrt(0.02*0.98*0.002) = 3.194; p ~ 0.0007.
        let p = two_proportion_p(10, 1000, 30, 1000);
        assert!(close(p, 0.000_70, 0.000_05), "{p}");
        // the same proportions: p = 0.5.
        assert!(close(two_proportion_p(10, 1000, 10, 1000), 0.5, 1e-6));
        // no errors anywhere, or an empty sample: no evidence.
        assert_eq!(two_proportion_p(0, 1000, 0, 1000), 1.0);
        assert_eq!(two_proportion_p(0, 0, 5, 10), 1.0);
        // tiny samples: 0/20 vs 1/20 is not significant.
        assert!(two_proportion_p(0, 20, 1, 20) > 0.05);
    }
}
