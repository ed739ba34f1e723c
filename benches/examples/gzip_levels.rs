//! Size and time of gzip levels on the 10k-series report body.
#![allow(clippy::unwrap_used, reason = "scratch")]
use std::io::Write;
use std::time::Instant;
fn main() {
    let body = std::fs::read(std::env::args().nth(1).unwrap()).unwrap();
    for level in [1, 2, 3, 4, 5, 6] {
        let mut best = f64::MAX;
        let mut size = 0;
        for _ in 0..20 {
            let t = Instant::now();
            let mut enc =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
            enc.write_all(&body).unwrap();
            let out = enc.finish().unwrap();
            best = best.min(t.elapsed().as_secs_f64() * 1e3);
            size = out.len();
        }
        println!("level {level}: {size} bytes, {best:.2} ms");
    }
}
