# A gateway restored from a backup holds fewer of this meter's readings
# than it had acknowledged (its Response #1 says up to which). The queue
# still holds the acknowledged ones after the newest backup
# (readingqueue.py): mark them pending again. Imported only when that
# happens, so that its code takes no heap on a meter that never needs it.


def rewind(queue, gw_seq, log):
    """Send again what is held after gw_seq; log what is sent again and
    what the gateway lacks that is no longer here."""
    if gw_seq >= queue.acked:
        return 0, 0
    first = None
    again = 0
    for rec in queue._records():
        if rec[0] == "R" and rec[1] > gw_seq:
            if first is None:
                first = rec[1]
            if rec[1] <= queue.acked:
                again += 1
    start = gw_seq if first is None or first <= gw_seq + 1 else first - 1
    lost = start - gw_seq if first is not None else queue.acked - gw_seq
    if first is None:
        start = queue.acked
    queue.acked = start
    queue._compact()
    log("the gateway has readings only up to %d (restored from a backup?): sending %d again%s"
        % (gw_seq, again, ", %d no longer here" % lost if lost else ""))
    return again, lost
