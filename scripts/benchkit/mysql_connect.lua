-- sysbench script: a connection per transaction (connect, SELECT 1, disconnect), the MariaDB row beside
-- pgbench -S -C. (con:reconnect() crashes sysbench 1.0.20: a disconnect and a new connection instead.)
function thread_init()
  drv = sysbench.sql.driver()
  con = drv:connect()
end
function event()
  con:query("SELECT 1")
  con:disconnect()
  con = drv:connect()
end
function thread_done()
  con:disconnect()
end
