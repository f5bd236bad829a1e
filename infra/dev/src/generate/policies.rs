//! Each function's least-privilege policy: its own table items and index, its own timer queue and
//! schedules, the events it declares it sends, its SSM paths and the table's key.

use super::*;

pub(super) fn policies(lambda: &Lambda, id: &str, functions: &[Function]) -> String {
    let binary = lambda.binary();
    let detail_types = detail_types(functions).into_iter().collect::<Vec<_>>().join(", ");
    let mut out = format!(
        r#"      Policies:
        - SQSSendMessagePolicy:
            QueueName: !GetAtt {id}TimerQueue.QueueName
        - Statement:
            # Its own items: the store's calls (Query on the table and the `due` index, Get, Put,
            # Update inside TransactWriteItems, Delete), on partition keys of its scope only.
            - Sid: OwnItems
              Effect: Allow
              Action: [dynamodb:GetItem, dynamodb:PutItem, dynamodb:UpdateItem, dynamodb:DeleteItem, dynamodb:Query]
              Resource:
                - !GetAtt RunsTable.Arn
                - !Sub '${{RunsTable.Arn}}/index/due'
              Condition:
                ForAllValues:StringLike:
                  dynamodb:LeadingKeys: ['{binary}#*']
            # Its timer queue, as its event source mapping reads it.
            - Sid: OwnTimerQueue
              Effect: Allow
              Action: [sqs:ReceiveMessage, sqs:DeleteMessage, sqs:GetQueueAttributes]
              Resource: !GetAtt {id}TimerQueue.Arn
            # The events its functions declare (`.sends`) and the runtime's own it emits.
            - Sid: DeclaredEvents
              Effect: Allow
              Action: events:PutEvents
              Resource: !GetAtt EventBus.Arn
              Condition:
                StringEquals:
                  events:source: cairn
                  events:detail-type: [{detail_types}]
            # Its own long wake-ups: schedules named `{binary}.*` in this stack's group, which can
            # only run as its own Scheduler role.
            - Sid: OwnSchedules
              Effect: Allow
              Action: [scheduler:CreateSchedule, scheduler:DeleteSchedule]
              Resource: !Sub 'arn:${{AWS::Partition}}:scheduler:${{AWS::Region}}:${{AWS::AccountId}}:schedule/${{ScheduleGroup}}/{binary}.*'
            - Sid: PassOwnSchedulerRole
              Effect: Allow
              Action: iam:PassRole
              Resource: !GetAtt {id}SchedulerRole.Arn
              Condition:
                StringEquals:
                  iam:PassedToService: scheduler.amazonaws.com
"#
    );
    for (index, path) in lambda.parameter_paths().iter().enumerate() {
        let suffix = if index == 0 { String::new() } else { (index + 1).to_string() };
        let arn = quoted(&format!(
            "arn:${{AWS::Partition}}:ssm:${{AWS::Region}}:${{AWS::AccountId}}:parameter{}*",
            path.trim_end_matches('/').to_string() + "/"
        ));
        let _ = write!(
            out,
            r#"            # The SSM parameters it reads (`.reads_parameters`), and their KMS decryption only through SSM.
            - Sid: ReadParameters{suffix}
              Effect: Allow
              Action: ssm:GetParameter
              Resource: !Sub {arn}
            - Sid: DecryptParameters{suffix}
              Effect: Allow
              Action: kms:Decrypt
              Resource: !Sub 'arn:${{AWS::Partition}}:kms:${{AWS::Region}}:${{AWS::AccountId}}:key/*'
              Condition:
                StringEquals:
                  kms:ViaService: !Sub 'ssm.${{AWS::Region}}.amazonaws.com'
                StringLike:
                  kms:EncryptionContext:PARAMETER_ARN: !Sub {arn}
"#
        );
    }
    out.push_str(
        r#"            - !If
              - HasTableKey
              - Sid: TableKey
                Effect: Allow
                Action: [kms:Decrypt, kms:Encrypt, kms:GenerateDataKey]
                Resource: !Ref TableKmsKeyArn
                Condition:
                  StringEquals:
                    kms:ViaService: !Sub 'dynamodb.${AWS::Region}.amazonaws.com'
              - !Ref AWS::NoValue
"#,
    );
    out
}
