//! Taillard's 120 permutation flow-shop instances (E. Taillard, "Benchmarks
//! for basic scheduling problems", EJOR 64 (1993) 278–285), regenerated from
//! his published time seeds with his generator, and the published best-known
//! makespans.
//!
//! The generator is Taillard's portable linear congruential generator
//! (a = 16807, m = 2³¹ − 1, Schrage's decomposition b = 127773, c = 2836);
//! processing times are drawn uniformly in 1..=99, machine by machine, job by
//! job. The seeds and the generator are those of the C port by Mattfeld and
//! Vaessens (`fsp_gen.c`, 1996) of Taillard's Pascal program.

use super::Instance;

/// How many instances Taillard published.
pub const COUNT: usize = 120;

/// Taillard's time seeds, `SEEDS[i]` for instance `ta{i+1:03}`.
///
/// Cross-checked against `fsp_gen.c` (Mattfeld and Vaessens' C port, e.g. in
/// github.com/Dominiquini/Ateams, `FlowShop/dados/fsp_gen.c`) and the
/// `time_seeds` table of github.com/jangmys/pbb
/// (`evaluation/flowshop/src/c_taillard.c`).
pub const SEEDS: [i64; COUNT] = [
    // 20 jobs × 5 machines
    873654221, 379008056, 1866992158, 216771124, 495070989, 402959317, 1369363414, 2021925980,
    573109518, 88325120, //
    // 20 × 10
    587595453, 1401007982, 873136276, 268827376, 1634173168, 691823909, 73807235, 1273398721,
    2065119309, 1672900551, //
    // 20 × 20
    479340445, 268827376, 1958948863, 918272953, 555010963, 2010851491, 1519833303, 1748670931,
    1923497586, 1829909967, //
    // 50 × 5
    1328042058, 200382020, 496319842, 1203030903, 1730708564, 450926852, 1303135678, 1273398721,
    587288402, 248421594, //
    // 50 × 10
    1958948863, 575633267, 655816003, 1977864101, 93805469, 1803345551, 49612559, 1899802599,
    2013025619, 578962478, //
    // 50 × 20
    1539989115, 691823909, 655816003, 1315102446, 1949668355, 1923497586, 1805594913, 1861070898,
    715643788, 464843328, //
    // 100 × 5
    896678084, 1179439976, 1122278347, 416756875, 267829958, 1835213917, 1328833962, 1418570761,
    161033112, 304212574, //
    // 100 × 10
    1539989115, 655816003, 960914243, 1915696806, 2013025619, 1168140026, 1923497586, 167698528,
    1528387973, 993794175, //
    // 100 × 20
    450926852, 1462772409, 1021685265, 83696007, 508154254, 1861070898, 26482542, 444956424,
    2115448041, 118254244, //
    // 200 × 10
    471503978, 1215892992, 135346136, 1602504050, 160037322, 551454346, 519485142, 383947510,
    1968171878, 540872513, //
    // 200 × 20
    2013025619, 475051709, 914834335, 810642687, 1019331795, 2056065863, 1342855162, 1325809384,
    1988803007, 765656702, //
    // 500 × 20
    1368624604, 450181436, 1927888393, 1759567256, 606425239, 19268348, 1298201670, 2041736264,
    379756761, 28837162,
];

/// Published best-known makespans (upper bounds), `BEST_KNOWN[i]` for
/// `ta{i+1:03}`. For ta001–ta050 these are proven optima and every source
/// agrees; for the larger classes several are still only upper bounds and
/// have improved over the years (the table of Taillard's 1993 paper is
/// outdated there).
///
/// Source: the table used by the Inria permutation flow-shop B&B work,
/// github.com/Guillaume-Helbecque/P3D-DFS,
/// `benchmarks/PFSP/instances/Instance_Taillard.chpl` (its latest version,
/// which includes ta056 = 3679 proven by Gmys et al. 2020). The
/// TimefoldAI/timefold-solver-benchmarks `FlowShopDataset.java` table agrees
/// on every value except five 100×20 instances (ta081, ta085, ta086, ta088,
/// ta089) and a typo for ta108.
pub const BEST_KNOWN: [u32; COUNT] = [
    1278, 1359, 1081, 1293, 1235, 1195, 1234, 1206, 1230, 1108, // 20 × 5
    1582, 1659, 1496, 1377, 1419, 1397, 1484, 1538, 1593, 1591, // 20 × 10
    2297, 2099, 2326, 2223, 2291, 2226, 2273, 2200, 2237, 2178, // 20 × 20
    2724, 2834, 2621, 2751, 2863, 2829, 2725, 2683, 2552, 2782, // 50 × 5
    2991, 2867, 2839, 3063, 2976, 3006, 3093, 3037, 2897, 3065, // 50 × 10
    3846, 3699, 3640, 3719, 3610, 3679, 3704, 3691, 3741, 3755, // 50 × 20
    5493, 5268, 5175, 5014, 5250, 5135, 5246, 5094, 5448, 5322, // 100 × 5
    5770, 5349, 5676, 5781, 5467, 5303, 5595, 5617, 5871, 5845, // 100 × 10
    6173, 6183, 6252, 6254, 6285, 6331, 6223, 6372, 6247, 6404, // 100 × 20
    10862, 10480, 10922, 10889, 10524, 10329, 10854, 10730, 10438, 10675, // 200 × 10
    11158, 11160, 11281, 11275, 11259, 11176, 11337, 11301, 11146, 11284, // 200 × 20
    26040, 26500, 26371, 26456, 26334, 26469, 26389, 26560, 26005, 26457, // 500 × 20
];

/// `(jobs, machines)` of instance `number` (1-based, `1..=120`).
pub fn size(number: usize) -> (usize, usize) {
    match number {
        1..=10 => (20, 5),
        11..=20 => (20, 10),
        21..=30 => (20, 20),
        31..=40 => (50, 5),
        41..=50 => (50, 10),
        51..=60 => (50, 20),
        61..=70 => (100, 5),
        71..=80 => (100, 10),
        81..=90 => (100, 20),
        91..=100 => (200, 10),
        101..=110 => (200, 20),
        _ => (500, 20),
    }
}

/// The canonical name of instance `number`: `ta001` … `ta120`.
pub fn name(number: usize) -> String {
    format!("ta{number:03}")
}

/// Parses `ta001`, `ta1`, `TA001` … into the instance number `1..=120`.
pub fn parse_name(text: &str) -> Result<usize, String> {
    let bad =
        || format!("unknown flow-shop instance {text:?}: expected one of Taillard's ta001 … ta120");
    let lower = text.trim().to_ascii_lowercase();
    let digits = lower.strip_prefix("ta").ok_or_else(bad)?;
    if digits.is_empty() || digits.len() > 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let number: usize = digits.parse().map_err(|_| bad())?;
    if (1..=COUNT).contains(&number) {
        Ok(number)
    } else {
        Err(bad())
    }
}

/// Taillard's generator: one draw, uniform in `low..=high`, advancing `seed`.
pub fn unif(seed: &mut i64, low: u32, high: u32) -> u32 {
    const M: i64 = 2_147_483_647;
    const A: i64 = 16_807;
    const B: i64 = 127_773;
    const C: i64 = 2_836;
    let k = *seed / B;
    *seed = A * (*seed % B) - k * C;
    if *seed < 0 {
        *seed += M;
    }
    let value = *seed as f64 / M as f64;
    low + (value * f64::from(high - low + 1)).floor() as u32
}

/// Processing times drawn from `seed`, machine by machine: entry
/// `[machine * jobs + job]`.
pub fn generate(jobs: usize, machines: usize, seed: i64) -> Vec<u16> {
    let mut seed = seed;
    (0..machines * jobs)
        .map(|_| unif(&mut seed, 1, 99) as u16)
        .collect()
}

/// Instance `number` (1-based) regenerated from its seed.
pub fn instance(number: usize) -> Instance {
    assert!(
        (1..=COUNT).contains(&number),
        "Taillard instances are ta001 … ta120"
    );
    let (jobs, machines) = size(number);
    Instance::from_machine_rows(
        name(number),
        jobs,
        machines,
        generate(jobs, machines, SEEDS[number - 1]),
    )
}
