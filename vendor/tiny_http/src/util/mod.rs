pub(crate) use self::chunked::{write_chunked, ChunkedDecoder};
pub(crate) use self::deadline_stream::DeadlineStream;
pub(crate) use self::messages_queue::MessagesQueue;
pub(crate) use self::task_pool::TaskPool;

mod chunked;
mod deadline_stream;
mod messages_queue;
mod task_pool;
