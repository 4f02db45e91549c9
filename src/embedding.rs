//! Embedding guide: how a VMM gives a guest co9p's virtio-9p device.
//!
//! The device is [`Virtio9p`]: virtio device id 9, one request queue, features
//! `VERSION_1`, `MOUNT_TAG`, `RING_EVENT_IDX` and `INDIRECT_DESC`, and a configuration space
//! of `le16 tag_len` then the mount tag. It is built from a [`DeviceConfig`] (the tag, the
//! 9P server's limits, the largest queue), a [`Filesystem`] ([`HostFs`] for a host
//! directory, [`MemFs`] in memory) and an [`Executor`] ([`ThreadPool`] in production). The
//! guest mounts it with `mount -t 9p -o trans=virtio,version=9p2000.L TAG /mnt`.
//!
//! A VMM has three ways to put it in front of a guest. All three drive the same device
//! code: chain walk and checks, the responder, zero-copy `Rread`/`Twrite`, EVENT_IDX
//! suppression, and every popped chain completed exactly once.
//!
//! # 1. In process, behind the virtio-mmio front
//!
//! For a VMM with an MMIO bus (Firecracker-like). Map an [`MmioFront`] at the device's
//! window and forward every guest access to [`MmioDevice::read`]/[`MmioDevice::write`].
//!
//! - **Memory**: the guest's RAM as an `Arc<GuestMemoryMmap>`, given to
//!   [`MmioFront::new`].
//! - **Interrupt**: a [`Notifier`] callback (your irqfd write, or a line you raise). It is
//!   called from executor threads; the interrupt status register says why.
//! - **Kicks**: a write to QueueNotify runs [`Virtio9p::handle_kick`] on the thread that
//!   made it (the vCPU thread, or an ioeventfd handler): it only walks the ring and spawns
//!   requests, it never waits on the filesystem.
//! - **Config space, status, features, queue set-up**: the registers do it all.
//! - **Reset**: a status write of 0 resets the device. Before unmapping a reset guest's
//!   memory, wait on [`Virtio9p::reset_latch`]: it opens once no request of the old
//!   session can touch guest memory.
//!
//! `examples/embed.rs` does exactly this, serving a host directory through [`HostFs`].
//!
//! # 2. In process, behind your own transport
//!
//! For a VMM with its own virtio-pci (or other) transport. Call the transport-neutral API
//! yourself, register by register ([`Virtio9p::set_status`],
//! [`Virtio9p::set_driver_features`], [`Virtio9p::set_queue_size`],
//! [`Virtio9p::set_queue_desc_table`], …, then [`Virtio9p::activate`] with the memory and
//! the notifier at `DRIVER_OK`), or, if your transport learns the ring all at once, hand it
//! over whole with [`Virtio9p::start_queue`] (features, a `virtio_queue::QueueState`,
//! memory, notifier) and take it back with [`Virtio9p::stop_queue`], which returns only
//! once every popped chain is completed. [`Virtio9p::read_config`] serves the
//! configuration space; [`Virtio9p::set_memory`] replaces guest memory while running
//! (memory hot-plug); [`Virtio9p::reset`] returns the reset's latch.
//!
//! # 3. Out of process: the vhost-user daemon
//!
//! For any VMM with a vhost-user frontend, the way virtiofsd serves virtio-fs: run
//! `co9p vhost-user --socket-path S --export DIR --tag TAG` (or call
//! [`transport::vhost_user::serve`](crate::transport::vhost_user::serve) from your own
//! process). The frontend must provide:
//!
//! - **Memory**: guest RAM in shareable file descriptors (QEMU:
//!   `-object memory-backend-memfd,id=mem,size=M,share=on -machine memory-backend=mem`).
//!   The table may change at run time (`SET_MEM_TABLE`, `ADD_MEM_REGION`).
//! - **Interrupt and kicks**: the call and kick eventfds of the one queue.
//! - **Config space**: read with `GET_CONFIG` (protocol feature `CONFIG`), since a generic
//!   frontend does not know 9p's; QEMU 10.2 and later:
//!   `-device vhost-user-test-device-pci,chardev=C,virtio-id=9,num_vqs=1,config_size=N`
//!   with `N` = 2 + the tag's length.
//! - **Reset and stop**: `GET_VRING_BASE` is answered only once no request of the ring
//!   touches guest memory; `RESET_DEVICE` (or a new driver's `Tversion`) starts a fresh
//!   session. One frontend at a time; when it disconnects, even killed mid-request, its
//!   requests are cancelled and waited for, and the daemon exits (or, with `--persistent`,
//!   waits for the next frontend).
//!
//! # Choosing
//!
//! In process is the fastest (no socket, no eventfd hop: `cargo bench --bench vhost_user`
//! compares the two on the same requests). The daemon keeps the file server out of the
//! VMM's address space and lets it run sandboxed, under another uid, or restart
//! independently.
//!
//! [`Virtio9p`]: crate::transport::virtio::Virtio9p
//! [`Virtio9p::handle_kick`]: crate::transport::virtio::Virtio9p::handle_kick
//! [`Virtio9p::reset_latch`]: crate::transport::virtio::Virtio9p::reset_latch
//! [`Virtio9p::set_status`]: crate::transport::virtio::Virtio9p::set_status
//! [`Virtio9p::set_driver_features`]: crate::transport::virtio::Virtio9p::set_driver_features
//! [`Virtio9p::set_queue_size`]: crate::transport::virtio::Virtio9p::set_queue_size
//! [`Virtio9p::set_queue_desc_table`]: crate::transport::virtio::Virtio9p::set_queue_desc_table
//! [`Virtio9p::activate`]: crate::transport::virtio::Virtio9p::activate
//! [`Virtio9p::start_queue`]: crate::transport::virtio::Virtio9p::start_queue
//! [`Virtio9p::stop_queue`]: crate::transport::virtio::Virtio9p::stop_queue
//! [`Virtio9p::read_config`]: crate::transport::virtio::Virtio9p::read_config
//! [`Virtio9p::set_memory`]: crate::transport::virtio::Virtio9p::set_memory
//! [`Virtio9p::reset`]: crate::transport::virtio::Virtio9p::reset
//! [`DeviceConfig`]: crate::transport::virtio::DeviceConfig
//! [`Notifier`]: crate::transport::virtio::Notifier
//! [`MmioFront`]: crate::transport::virtio::mmio::MmioFront
//! [`MmioFront::new`]: crate::transport::virtio::mmio::MmioFront::new
//! [`MmioDevice::read`]: crate::transport::virtio::mmio::MmioDevice::read
//! [`MmioDevice::write`]: crate::transport::virtio::mmio::MmioDevice::write
//! [`Filesystem`]: crate::fs::Filesystem
//! [`HostFs`]: crate::fs::HostFs
//! [`MemFs`]: crate::fs::MemFs
//! [`Executor`]: crate::co::Executor
//! [`ThreadPool`]: crate::co::ThreadPool
