//! One server under test: connecting, attaching, fixtures.

use super::*;

/// One server under test.
pub(super) struct Side {
    pub(super) label: &'static str,
    pub(super) addr: String,
    pub(super) aname: String,
    pub(super) dir: String,
    pub(super) msize: u32,
}

impl Side {
    /// A connection with the per-connection fids of `w` set up.
    pub(super) fn open(&self, args: &Args, w: Option<Workload>) -> Res<Conn> {
        let mut c = Conn::handshake(&self.addr, &self.aname, args.msize)?;
        c.walk(ROOT, DIR, &[&self.dir])?;
        match w {
            Some(Workload::Getattr) => c.walk(DIR, DATA, &["data"])?,
            Some(Workload::Read4k | Workload::Read1m) => {
                c.walk(DIR, DATA_OPEN, &["data"])?;
                c.rpc(Tmessage::Lopen {
                    fid: DATA_OPEN,
                    flags: OpenFlags::RDONLY,
                })?;
            }
            Some(Workload::Create) => c.walk(DIR, CHURN, &["churn"])?,
            Some(Workload::Readdir) => c.walk(DIR, MANY, &["many"])?,
            Some(Workload::Walk) | None => {}
        }
        Ok(c)
    }

    /// Makes the fixtures the chosen workloads read.
    pub(super) fn setup(&mut self, args: &Args) -> Res<()> {
        let mut c = Conn::handshake(&self.addr, &self.aname, args.msize)?;
        self.msize = c.msize;
        let mkdir = |c: &mut Conn, dfid: Fid, name: &str| {
            c.rpc(Tmessage::Mkdir {
                dfid,
                name: name.into(),
                mode: 0o755,
                gid: 0,
            })
            .map(drop)
        };
        mkdir(&mut c, ROOT, &self.dir)?;
        c.walk(ROOT, DIR, &[&self.dir])?;
        mkdir(&mut c, DIR, "churn")?;
        mkdir(&mut c, DIR, "many")?;
        // What the walk workload walks: a directory and a file in it.
        mkdir(&mut c, DIR, "walk")?;
        c.walk(DIR, Fid(11), &["walk"])?;
        c.rpc(Tmessage::Lcreate {
            fid: Fid(11),
            name: "leaf".into(),
            flags: OpenFlags::WRONLY,
            mode: 0o644,
            gid: 0,
        })?;
        c.clunk(Fid(11))?;
        // The data file, written in msize-sized pipelined Twrites.
        c.walk(DIR, Fid(10), &[])?;
        c.rpc(Tmessage::Lcreate {
            fid: Fid(10),
            name: "data".into(),
            flags: OpenFlags::WRONLY,
            mode: 0o644,
            gid: 0,
        })?;
        let wants_data = args
            .workloads
            .iter()
            .any(|w| matches!(w, Workload::Read4k | Workload::Read1m));
        let size = if wants_data { args.file_mib * MIB } else { 0 };
        let chunk = (c.msize as usize - TWRITE_HEADER_LEN - 64).min(MIB as usize);
        let mut pattern = vec![0u8; chunk];
        for (i, b) in pattern.iter_mut().enumerate() {
            *b = (i * 7 + i / 251) as u8;
        }
        let writes = (0..size).step_by(chunk).map(|off| Tmessage::Write {
            fid: Fid(10),
            offset: off,
            data: Data(pattern[..chunk.min((size - off) as usize)].to_vec()),
        });
        c.batch(writes)?;
        c.clunk(Fid(10))?;
        // The directory to list: --entries empty files.
        if args.workloads.contains(&Workload::Readdir) {
            c.walk(DIR, MANY, &["many"])?;
            c.files(
                FilesOp::Create,
                MANY,
                0..u64::from(args.entries),
                entry_name,
            )?;
        }
        Ok(())
    }

    /// Removes the fixtures with Twalk + Tremove (diod has no Tunlinkat).
    pub(super) fn cleanup(&self, args: &Args) -> Res<()> {
        let mut c = Conn::handshake(&self.addr, &self.aname, args.msize)?;
        c.walk(ROOT, DIR, &[&self.dir])?;
        c.walk(DIR, MANY, &["many"])?;
        let entries = if args.workloads.contains(&Workload::Readdir) {
            args.entries
        } else {
            0
        };
        c.files(FilesOp::Remove, MANY, 0..u64::from(entries), entry_name)?;
        c.rpc(Tmessage::Remove { fid: MANY })?;
        for names in [&["walk", "leaf"][..], &["walk"], &["churn"], &["data"]] {
            c.walk(DIR, Fid(10), names)?;
            c.rpc(Tmessage::Remove { fid: Fid(10) })?;
        }
        c.rpc(Tmessage::Remove { fid: DIR })?;
        Ok(())
    }
}

/// The name of the `i`th file of the directory Treaddir lists.
fn entry_name(i: u64) -> String {
    format!("entry{i:05}")
}
