// The metadata calls of JDBC (the ones schema browsers make through the PostgreSQL JDBC
// driver) against a processor's PostgreSQL wire: `java -cp postgresql.jar
// JdbcMetadata.java HOST PORT`. Prints one tab-separated line per answer row:
//   product   NAME VERSION
//   catalog   TABLE_CAT                    getCatalogs()
//   schema    TABLE_SCHEM                  getSchemas()
//   table     TABLE_SCHEM TABLE_NAME TYPE  getTables(null, "public", "%", {"TABLE", "VIEW"})
//   column    TABLE_NAME COLUMN_NAME TYPE_NAME NULLABLE(0|1|2)
//                                          getColumns(null, "public", "%", "%")
//   query     VALUE                        SELECT current_database() (a prepared statement)
// and exits with 1 and the error on standard error if a call fails.

import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.util.Properties;

public class JdbcMetadata {
    public static void main(String[] args) throws Exception {
        String url = "jdbc:postgresql://" + args[0] + ":" + args[1] + "/edgeflow";
        Properties props = new Properties();
        props.setProperty("user", "edgeflow");
        props.setProperty("connectTimeout", "10");
        try (Connection conn = DriverManager.getConnection(url, props)) {
            DatabaseMetaData md = conn.getMetaData();
            System.out.println("product\t" + md.getDatabaseProductName() + "\t"
                    + md.getDatabaseProductVersion());
            try (ResultSet rs = md.getCatalogs()) {
                while (rs.next()) {
                    System.out.println("catalog\t" + rs.getString("TABLE_CAT"));
                }
            }
            try (ResultSet rs = md.getSchemas()) {
                while (rs.next()) {
                    System.out.println("schema\t" + rs.getString("TABLE_SCHEM"));
                }
            }
            try (ResultSet rs = md.getTables(null, "public", "%", new String[] {"TABLE", "VIEW"})) {
                while (rs.next()) {
                    System.out.println("table\t" + rs.getString("TABLE_SCHEM") + "\t"
                            + rs.getString("TABLE_NAME") + "\t" + rs.getString("TABLE_TYPE"));
                }
            }
            try (ResultSet rs = md.getColumns(null, "public", "%", "%")) {
                while (rs.next()) {
                    System.out.println("column\t" + rs.getString("TABLE_NAME") + "\t"
                            + rs.getString("COLUMN_NAME") + "\t" + rs.getString("TYPE_NAME")
                            + "\t" + rs.getInt("NULLABLE"));
                }
            }
            try (PreparedStatement st = conn.prepareStatement("SELECT current_database()");
                    ResultSet rs = st.executeQuery()) {
                while (rs.next()) {
                    System.out.println("query\t" + rs.getString(1));
                }
            }
        }
    }
}
