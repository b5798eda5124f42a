//! A file system that forgets what was never synced: the power-loss stand-in of the reliability
//! plan's row 3 (what `LazyFS` does, as a FUSE file system of the tests' own).
//!
//! Every inode has a live state (what programs see) and a durable state (what a disk would
//! hold after a power cut). `fsync` of a file makes its data and attributes durable; `fsync` of
//! a directory makes its entries durable. Under [`Model::Strict`] nothing else is durable: a
//! new name, a rename or an unlink is lost unless its directory is synced. Under
//! [`Model::Lazy`] names are durable at once (the `LazyFS` model: metadata reaches the disk, data
//! waits for fsync), so a file renamed into place without an fsync of its data comes back
//! empty — the zero-length files of an unsynced store.
//!
//! After every change of the durable state the file system keeps an [`Image`] of it: the disk
//! as a power cut at that moment would leave it. [`LazyFs::mount_image`] mounts one of them
//! ("after the reboot"), so a test can check every crash point of one real run.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, BsdFileFlags, Config, Errno, FileAttr, FileHandle, FileType, Filesystem,
    FopenFlags, Generation, INodeNo, LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, Request, SessionACL, TimeOrNow, WriteFlags,
};

/// Which changes survive a power cut without a sync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Model {
    /// Only synced data and synced directory entries survive.
    Strict,
    /// Names (create, rename, unlink, mkdir) survive at once; data only when synced.
    Lazy,
}

#[derive(Clone, Debug)]
enum Content {
    File(Arc<Vec<u8>>),
    Dir(BTreeMap<OsString, u64>),
    Link(PathBuf),
}

#[derive(Clone, Debug)]
struct Node {
    content: Content,
    mode: u16,
    uid: u32,
    gid: u32,
    mtime: SystemTime,
}

impl Node {
    fn kind(&self) -> FileType {
        match self.content {
            Content::File(_) => FileType::RegularFile,
            Content::Dir(_) => FileType::Directory,
            Content::Link(_) => FileType::Symlink,
        }
    }

    /// The same node as it is on disk when it was never synced: no data, no entries.
    fn unsynced(&self) -> Self {
        let content = match &self.content {
            Content::File(_) => Content::File(Arc::default()),
            Content::Dir(_) => Content::Dir(BTreeMap::new()),
            Content::Link(target) => Content::Link(target.clone()),
        };
        Self {
            content,
            ..self.clone()
        }
    }

    fn entries(&self) -> Option<&BTreeMap<OsString, u64>> {
        match &self.content {
            Content::Dir(entries) => Some(entries),
            _ => None,
        }
    }
}

struct Inode {
    live: Node,
    durable: Node,
}

/// What a power cut at one moment leaves on the disk: the durable nodes reachable from the
/// root.
#[derive(Clone, Debug)]
pub(crate) struct Image(Arc<BTreeMap<u64, Node>>);

impl Image {
    /// Every path in the image with its length (files) or `None` (directories and links).
    pub(crate) fn listing(&self) -> Vec<(PathBuf, Option<usize>)> {
        let mut out = Vec::new();
        let mut stack = vec![(PathBuf::new(), ROOT)];
        while let Some((path, ino)) = stack.pop() {
            let Some(node) = self.0.get(&ino) else {
                continue;
            };
            match &node.content {
                Content::File(data) => out.push((path, Some(data.len()))),
                Content::Link(_) => out.push((path, None)),
                Content::Dir(entries) => {
                    out.push((path.clone(), None));
                    for (name, child) in entries {
                        stack.push((path.join(name), *child));
                    }
                }
            }
        }
        out.sort();
        out
    }
}

struct State {
    model: Model,
    inodes: HashMap<u64, Inode>,
    next: u64,
    images: Vec<Image>,
    syncs: usize,
}

const ROOT: u64 = 1;
const TTL: Duration = Duration::from_secs(1);

impl State {
    fn new(model: Model, image: Option<&Image>) -> Self {
        let mut inodes = HashMap::new();
        let mut next = ROOT + 1;
        match image {
            Some(image) => {
                for (ino, node) in image.0.iter() {
                    inodes.insert(
                        *ino,
                        Inode {
                            live: node.clone(),
                            durable: node.clone(),
                        },
                    );
                    next = next.max(ino + 1);
                }
            }
            None => {
                let root = Node {
                    content: Content::Dir(BTreeMap::new()),
                    mode: 0o755,
                    uid: 0,
                    gid: 0,
                    mtime: SystemTime::now(),
                };
                inodes.insert(
                    ROOT,
                    Inode {
                        live: root.clone(),
                        durable: root,
                    },
                );
            }
        }
        Self {
            model,
            inodes,
            next,
            images: Vec::new(),
            syncs: 0,
        }
    }

    /// Keeps what a power cut now would leave.
    fn keep_image(&mut self) {
        let mut nodes = BTreeMap::new();
        let mut stack = vec![ROOT];
        while let Some(ino) = stack.pop() {
            if nodes.contains_key(&ino) {
                continue;
            }
            let Some(inode) = self.inodes.get(&ino) else {
                continue;
            };
            if let Some(entries) = inode.durable.entries() {
                stack.extend(entries.values().copied());
            }
            nodes.insert(ino, inode.durable.clone());
        }
        self.images.push(Image(Arc::new(nodes)));
    }

    fn attr(&self, ino: u64) -> Result<FileAttr, Errno> {
        let node = &self.inodes.get(&ino).ok_or(Errno::ENOENT)?.live;
        let size = match &node.content {
            Content::File(data) => data.len() as u64,
            Content::Dir(_) => 4096,
            Content::Link(target) => target.as_os_str().len() as u64,
        };
        Ok(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: node.mtime,
            mtime: node.mtime,
            ctime: node.mtime,
            crtime: node.mtime,
            kind: node.kind(),
            perm: node.mode,
            nlink: if node.kind() == FileType::Directory {
                2
            } else {
                1
            },
            uid: node.uid,
            gid: node.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    fn dir(&self, ino: u64) -> Result<&BTreeMap<OsString, u64>, Errno> {
        self.inodes
            .get(&ino)
            .ok_or(Errno::ENOENT)?
            .live
            .entries()
            .ok_or(Errno::ENOTDIR)
    }

    fn child(&self, parent: u64, name: &OsStr) -> Result<u64, Errno> {
        self.dir(parent)?.get(name).copied().ok_or(Errno::ENOENT)
    }

    /// Sets (or with `None` removes) the entry `name` of `parent`, durably at once under the
    /// lazy model.
    fn set_entry(&mut self, parent: u64, name: &OsStr, child: Option<u64>) {
        let lazy = self.model == Model::Lazy;
        let inode = self.inodes.get_mut(&parent).expect("parent exists");
        let nodes = if lazy {
            vec![&mut inode.live, &mut inode.durable]
        } else {
            vec![&mut inode.live]
        };
        for node in nodes {
            if let Content::Dir(entries) = &mut node.content {
                match child {
                    Some(child) => entries.insert(name.to_owned(), child),
                    None => entries.remove(name),
                };
            }
        }
        if lazy {
            self.keep_image();
        }
    }

    fn make(
        &mut self,
        req: &Request,
        parent: u64,
        name: &OsStr,
        content: Content,
        mode: u32,
    ) -> Result<FileAttr, Errno> {
        self.dir(parent)?;
        if self.child(parent, name).is_ok() {
            return Err(Errno::EEXIST);
        }
        let ino = self.next;
        self.next += 1;
        let live = Node {
            content,
            mode: (mode & 0o7777) as u16,
            uid: req.uid(),
            gid: req.gid(),
            mtime: SystemTime::now(),
        };
        let durable = live.unsynced();
        self.inodes.insert(ino, Inode { live, durable });
        self.set_entry(parent, name, Some(ino));
        self.attr(ino)
    }

    fn sync(&mut self, ino: u64) -> Result<(), Errno> {
        let inode = self.inodes.get_mut(&ino).ok_or(Errno::ENOENT)?;
        inode.durable = inode.live.clone();
        self.syncs += 1;
        self.keep_image();
        Ok(())
    }
}

/// The file system, mounted at one directory until dropped (or [`LazyFs::unmount`]).
pub(crate) struct LazyFs {
    state: Arc<Mutex<State>>,
    session: Option<fuser::BackgroundSession>,
    at: PathBuf,
}

struct Served(Arc<Mutex<State>>);

impl Served {
    fn state(&self) -> MutexGuard<'_, State> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl LazyFs {
    /// Mounts an empty file system at `at` (an existing, empty directory).
    pub(crate) fn mount(at: &Path, model: Model) -> std::io::Result<Self> {
        Self::serve(at, State::new(model, None))
    }

    /// Mounts what a power cut left (`image`) at `at`: the machine after the reboot.
    pub(crate) fn mount_image(at: &Path, image: &Image) -> std::io::Result<Self> {
        Self::serve(at, State::new(Model::Strict, Some(image)))
    }

    fn serve(at: &Path, state: State) -> std::io::Result<Self> {
        let state = Arc::new(Mutex::new(state));
        let mut config = Config::default();
        config.mount_options = vec![MountOption::FSName("kiln-lazyfs".into()), MountOption::RW];
        // Steps run as another uid than the test: they must reach the store through it.
        config.acl = SessionACL::All;
        let session = fuser::spawn_mount(Served(state.clone()), at, &config)?;
        Ok(Self {
            state,
            session: Some(session),
            at: at.to_owned(),
        })
    }

    /// Where it is mounted.
    pub(crate) fn path(&self) -> &Path {
        &self.at
    }

    /// The disk as a power cut after each durable change would have left it, in order.
    pub(crate) fn images(&self) -> Vec<Image> {
        self.state().images.clone()
    }

    /// How many fsync and fsyncdir calls it has served.
    pub(crate) fn syncs(&self) -> usize {
        self.state().syncs
    }

    /// Unmounts (the power cut: nothing may still use it).
    pub(crate) fn unmount(mut self) -> std::io::Result<()> {
        match self.session.take() {
            Some(session) => session.umount_and_join(),
            None => Ok(()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for LazyFs {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            let _ = session.umount_and_join();
        }
    }
}

fn reply_entry(result: Result<FileAttr, Errno>, reply: ReplyEntry) {
    match result {
        Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
        Err(e) => reply.error(e),
    }
}

fn reply_empty(result: Result<(), Errno>, reply: ReplyEmpty) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

impl Filesystem for Served {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let state = self.state();
        reply_entry(
            state.child(parent.0, name).and_then(|ino| state.attr(ino)),
            reply,
        );
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.state().attr(ino.0) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut state = self.state();
        let lazy = state.model == Model::Lazy;
        let Some(inode) = state.inodes.get_mut(&ino.0) else {
            reply.error(Errno::ENOENT);
            return;
        };
        let node = &mut inode.live;
        if let Some(size) = size {
            match &mut node.content {
                Content::File(data) => {
                    Arc::make_mut(data).resize(usize::try_from(size).unwrap_or(usize::MAX), 0);
                }
                _ => {
                    reply.error(Errno::EISDIR);
                    return;
                }
            }
        }
        // Attributes are metadata: durable at once under the lazy model, like names.
        let mut targets = vec![&mut inode.live];
        if lazy {
            targets.push(&mut inode.durable);
        }
        for node in targets {
            if let Some(mode) = mode {
                node.mode = (mode & 0o7777) as u16;
            }
            if let Some(uid) = uid {
                node.uid = uid;
            }
            if let Some(gid) = gid {
                node.gid = gid;
            }
            match mtime {
                Some(TimeOrNow::SpecificTime(t)) => node.mtime = t,
                Some(TimeOrNow::Now) => node.mtime = SystemTime::now(),
                None => {}
            }
        }
        match state.attr(ino.0) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let state = self.state();
        match state.inodes.get(&ino.0).map(|i| &i.live.content) {
            Some(Content::Link(target)) => reply.data(target.as_os_str().as_encoded_bytes()),
            Some(_) => reply.error(Errno::EINVAL),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        if mode & libc_s_ifmt() != 0o100_000 {
            reply.error(Errno::EPERM);
            return;
        }
        let result = self.state().make(
            req,
            parent.0,
            name,
            Content::File(Arc::default()),
            mode & !umask,
        );
        reply_entry(result, reply);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let result = self.state().make(
            req,
            parent.0,
            name,
            Content::Dir(BTreeMap::new()),
            mode & !umask,
        );
        reply_entry(result, reply);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut state = self.state();
        let result = state.child(parent.0, name).and_then(|ino| {
            if state.dir(ino).is_ok() {
                return Err(Errno::EISDIR);
            }
            state.set_entry(parent.0, name, None);
            Ok(())
        });
        reply_empty(result, reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut state = self.state();
        let result = state.child(parent.0, name).and_then(|ino| {
            if !state.dir(ino)?.is_empty() {
                return Err(Errno::ENOTEMPTY);
            }
            state.set_entry(parent.0, name, None);
            Ok(())
        });
        reply_empty(result, reply);
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let result = self.state().make(
            req,
            parent.0,
            link_name,
            Content::Link(target.to_owned()),
            0o777,
        );
        reply_entry(result, reply);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut state = self.state();
        let result = (|| {
            let ino = state.child(parent.0, name)?;
            state.dir(newparent.0)?;
            if flags.contains(RenameFlags::RENAME_EXCHANGE) {
                return Err(Errno::EINVAL);
            }
            if let Ok(existing) = state.child(newparent.0, newname) {
                if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                    return Err(Errno::EEXIST);
                }
                if existing == ino {
                    return Ok(());
                }
                match (state.dir(ino).is_ok(), state.dir(existing)) {
                    (true, Ok(entries)) if !entries.is_empty() => return Err(Errno::ENOTEMPTY),
                    (true, Err(_)) => return Err(Errno::ENOTDIR),
                    (false, Ok(_)) => return Err(Errno::EISDIR),
                    _ => {}
                }
            }
            state.set_entry(parent.0, name, None);
            state.set_entry(newparent.0, newname, Some(ino));
            Ok(())
        })();
        reply_empty(result, reply);
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let mut state = self.state();
        let result = (|| {
            if state.dir(ino.0).is_ok() {
                return Err(Errno::EPERM);
            }
            state.dir(newparent.0)?;
            if state.child(newparent.0, newname).is_ok() {
                return Err(Errno::EEXIST);
            }
            state.set_entry(newparent.0, newname, Some(ino.0));
            state.attr(ino.0)
        })();
        reply_entry(result, reply);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mut state = self.state();
        let Some(inode) = state.inodes.get_mut(&ino.0) else {
            reply.error(Errno::ENOENT);
            return;
        };
        if flags.0 & 0o1000 != 0 {
            // O_TRUNC
            if let Content::File(data) = &mut inode.live.content {
                *data = Arc::default();
            }
        }
        reply.opened(FileHandle(0), FopenFlags::empty());
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let state = self.state();
        match state.inodes.get(&ino.0).map(|i| &i.live.content) {
            Some(Content::File(data)) => {
                let start = usize::try_from(offset)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                let end = start.saturating_add(size as usize).min(data.len());
                reply.data(&data[start..end]);
            }
            Some(_) => reply.error(Errno::EISDIR),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        bytes: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut state = self.state();
        match state.inodes.get_mut(&ino.0).map(|i| &mut i.live) {
            Some(node) => {
                let Content::File(data) = &mut node.content else {
                    reply.error(Errno::EISDIR);
                    return;
                };
                let data = Arc::make_mut(data);
                let start = usize::try_from(offset).unwrap_or(usize::MAX);
                let end = start + bytes.len();
                if data.len() < end {
                    data.resize(end, 0);
                }
                data[start..end].copy_from_slice(bytes);
                node.mtime = SystemTime::now();
                reply.written(u32::try_from(bytes.len()).unwrap_or(u32::MAX));
            }
            None => reply.error(Errno::ENOENT),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply_empty(self.state().sync(ino.0), reply);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let state = self.state();
        let entries = match state.dir(ino.0) {
            Ok(entries) => entries,
            Err(e) => {
                reply.error(e);
                return;
            }
        };
        let mut all = vec![
            (ino.0, FileType::Directory, OsString::from(".")),
            (ino.0, FileType::Directory, OsString::from("..")),
        ];
        for (name, child) in entries {
            let kind = state
                .inodes
                .get(child)
                .map_or(FileType::RegularFile, |i| i.live.kind());
            all.push((*child, kind, name.clone()));
        }
        for (i, (child, kind, name)) in all
            .into_iter()
            .enumerate()
            .skip(usize::try_from(offset).unwrap_or(usize::MAX))
        {
            if reply.add(INodeNo(child), i as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply_empty(self.state().sync(ino.0), reply);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(1 << 24, 1 << 23, 1 << 23, 1 << 20, 1 << 19, 4096, 255, 4096);
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        match self.state().make(
            req,
            parent.0,
            name,
            Content::File(Arc::default()),
            mode & !umask,
        ) {
            Ok(attr) => reply.created(
                &TTL,
                &attr,
                Generation(0),
                FileHandle(0),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(e),
        }
    }
}

/// `S_IFMT`, without a libc dependency.
const fn libc_s_ifmt() -> u32 {
    0o170_000
}
