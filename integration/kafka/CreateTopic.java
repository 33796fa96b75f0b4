// Creates a topic with an exact partition count on the test cluster (Kafka 3.x or
// 4.x, one node or three) and waits until every partition has a leader. Run by `integration/stack.sh create-topic NAME N` as a
// single-file source program (java CreateTopic.java ...) against the cached broker
// jars, so no extra Maven artifact (kafka-tools pulls Jetty/Jersey) and no build step
// is needed. kcat cannot create topics, and auto-creation always uses num.partitions.
//
// Usage: java -cp 'libs/*' CreateTopic.java BOOTSTRAP TOPIC PARTITIONS
// Exit 0 when the topic exists with exactly PARTITIONS partitions (already existing
// with that count is fine), 1 otherwise, with the reason on stderr.

import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Properties;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.errors.TopicExistsException;

public class CreateTopic {
    public static void main(String[] args) throws Exception {
        if (args.length != 3) {
            System.err.println("usage: CreateTopic BOOTSTRAP TOPIC PARTITIONS");
            System.exit(2);
        }
        String bootstrap = args[0];
        String topic = args[1];
        int partitions = Integer.parseInt(args[2]);

        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "15000");
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "30000");
        try (Admin admin = Admin.create(props)) {
            try {
                // No replication factor: the broker's default.replication.factor (1 on a
                // one-node stack, 3 on the 3-node cluster). This constructor exists in
                // the 3.x and 4.x clients alike.
                admin.createTopics(List.of(new NewTopic(topic, Optional.of(partitions), Optional.empty())))
                        .all().get(30, TimeUnit.SECONDS);
            } catch (ExecutionException e) {
                if (!(e.getCause() instanceof TopicExistsException)) {
                    System.err.println("create-topic: " + e.getCause());
                    System.exit(1);
                }
            }
            // CreateTopics returns once the controller accepted the topic; a producer
            // started right after could still see LEADER_NOT_AVAILABLE. Wait for leaders.
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
            while (true) {
                String problem;
                try {
                    Map<String, TopicDescription> d =
                            admin.describeTopics(List.of(topic)).allTopicNames().get(10, TimeUnit.SECONDS);
                    List<TopicPartitionInfo> parts = d.get(topic).partitions();
                    if (parts.size() != partitions) {
                        System.err.println("create-topic: topic " + topic + " exists with "
                                + parts.size() + " partitions, wanted " + partitions);
                        System.exit(1);
                    }
                    problem = parts.stream().anyMatch(p -> p.leader() == null || p.leader().isEmpty())
                            ? "partition without leader" : null;
                } catch (ExecutionException e) {
                    problem = String.valueOf(e.getCause());
                }
                if (problem == null) break;
                if (System.nanoTime() > deadline) {
                    System.err.println("create-topic: timed out: " + problem);
                    System.exit(1);
                }
                Thread.sleep(100);
            }
        }
        System.out.println("topic=" + topic + " partitions=" + partitions);
    }
}
