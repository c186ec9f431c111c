pub(crate) use self::deadline_stream::DeadlineStream;
pub(crate) use self::input::Input;
pub(crate) use self::messages_queue::MessagesQueue;
pub(crate) use self::task_pool::TaskPool;

mod deadline_stream;
mod input;
mod messages_queue;
mod task_pool;
